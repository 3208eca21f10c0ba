"""The writer lock: processes take turns writing through ``flock`` on ``<db>.lock``.

The kernel hands a released ``flock`` straight to a process blocked on it, whereas
SQLite's own busy handler sleeps in growing steps and lets a busy publisher starve
the others. A blocked ``flock`` cannot be given a deadline, though, so an
uncontended lock is taken at once (``LOCK_NB``) and a contended one is waited for by
a helper thread, on a file description of its own, while the caller waits at most
until its deadline. A wait given up on is finished by the helper, which then lets
the lock go at once. Every call here blocks its thread, never the event loop: they
run on the broker's database and maintenance threads.
"""

from __future__ import annotations

import fcntl
import os
import queue
import threading
import time
from pathlib import Path

from .errors import LockTimeout

__all__ = ["WriterLock"]


class _Wait:
    """One contended acquisition, shared by the caller and the helper thread."""

    __slots__ = ("abandoned", "acquired", "done", "error", "fd", "guard")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.guard = threading.Lock()
        self.done = threading.Event()
        self.acquired = False
        self.abandoned = False
        self.error: OSError | None = None


class WriterLock:
    """``flock(LOCK_EX)`` on one file with a deadline; not reentrant."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = _open(path)
        self._held = -1
        self._waits: queue.SimpleQueue[_Wait | None] | None = None

    def acquire(self, deadline: float) -> None:
        """Take the lock, or raise :class:`LockTimeout` once ``time.monotonic()``
        passes ``deadline``."""
        if self.try_acquire():
            return
        if deadline <= time.monotonic():
            raise LockTimeout(self.path, 0)
        wait = _Wait(_open(self.path))
        if self._waits is None:
            self._waits = queue.SimpleQueue()
            threading.Thread(
                target=_serve, args=(self._waits,), name="herald-sqlite-lock", daemon=True
            ).start()
        started = time.monotonic()
        self._waits.put(wait)
        wait.done.wait(max(0.0, deadline - started))
        with wait.guard:
            if wait.acquired:
                self._held = wait.fd
                return
            wait.abandoned = True
        if wait.error is not None:
            raise wait.error
        raise LockTimeout(self.path, round(time.monotonic() - started, 3))

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never wait."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._held = self._fd
        return True

    def release(self) -> None:
        held, self._held = self._held, -1
        if held < 0:
            return
        fcntl.flock(held, fcntl.LOCK_UN)
        if held != self._fd:
            os.close(held)

    def close(self) -> None:
        """Release and close; a helper still blocked lets go of the lock when it gets it."""
        self.release()
        if self._waits is not None:
            self._waits.put(None)
            self._waits = None
        os.close(self._fd)


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _serve(waits: queue.SimpleQueue[_Wait | None]) -> None:
    while (wait := waits.get()) is not None:
        try:
            fcntl.flock(wait.fd, fcntl.LOCK_EX)
        except OSError as exc:
            wait.error = exc
            wait.done.set()
            os.close(wait.fd)
            continue
        with wait.guard:
            if not wait.abandoned:
                wait.acquired = True
                wait.done.set()
                continue
        fcntl.flock(wait.fd, fcntl.LOCK_UN)
        os.close(wait.fd)
