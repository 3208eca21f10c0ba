"""Waking consumers in other processes without polling.

Each consuming broker binds a Unix datagram socket and records its address and the
queues it consumes in the consumers table. After a commit that made deliveries
available, the committing process sends each consumer of those queues on the host a
datagram naming the queue ids; the consumer's event loop watches its socket with
``add_reader`` and re-queries those queues at once. A negated id (``-12``) says that
the holder of exclusive queue 12 let go, and wakes the loops standing by for it. On
Linux the sockets live in the abstract namespace (no files, gone with their
process); elsewhere in a directory next to the database file (``<db>.wake/``), where
stale ones are removed on sight.

Anyone who can write the database can write an address into it, so an address is
used only if it has exactly the form this broker gives its own sockets
(:func:`is_wake_address`): ``@herald-<16 hex digits>`` on Linux, else
``<db>.wake/<16 hex digits>``; and a stale one is removed only if it is a socket.
Nothing read from the database can make a publisher send elsewhere or delete a file.

:class:`ExitWatcher` gets an event as soon as another consumer process on this host
exits (``pidfd_open``), so its leases are reclaimed immediately.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import stat
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

__all__ = [
    "ExitWatcher",
    "WakeSender",
    "WakeSocket",
    "host_identity",
    "is_wake_address",
    "process_alive",
]

_ABSTRACT = sys.platform.startswith("linux")
_MAX_PATH = 100
_TOKEN = re.compile(r"[0-9a-f]{16}")
_PREFIX = "@herald-"


def wake_directory(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".wake")


def is_wake_address(address: object, db_path: Path) -> bool:
    """Whether ``address`` has the form this broker gives its own wake-up sockets."""
    if not isinstance(address, str):
        return False
    if _ABSTRACT:
        return address.startswith(_PREFIX) and bool(_TOKEN.fullmatch(address[len(_PREFIX) :]))
    directory, _, name = address.rpartition("/")
    return directory == str(wake_directory(db_path)) and bool(_TOKEN.fullmatch(name))


def _address(wake: str) -> str | bytes:
    return b"\0" + wake[1:].encode() if wake.startswith("@") else wake


class WakeSocket:
    """The receiving end: ``on_wake(queue_ids)`` runs on the loop when datagrams
    arrive (``None``: a datagram it could not read, wake every queue)."""

    def __init__(self, db_path: Path, on_wake: Callable[[set[int] | None], None]) -> None:
        self._on_wake = on_wake
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._file: Path | None = None
        token = secrets.token_hex(8)
        if _ABSTRACT:
            self.address: str | None = f"{_PREFIX}{token}"
            self._sock.bind(_address(self.address))
        else:
            directory = wake_directory(db_path)
            directory.mkdir(exist_ok=True)
            self._file = directory / token
            if len(str(self._file)) > _MAX_PATH:
                self.address = None  # too long for sun_path: rely on the safety poll
            else:
                self._sock.bind(str(self._file))
                self.address = str(self._file)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        qids: set[int] | None = set()
        try:
            while True:
                payload = self._sock.recv(4096)
                if qids is not None:
                    try:
                        qids.update(int(part) for part in payload.split(b","))
                    except ValueError:
                        qids = None
        except (BlockingIOError, InterruptedError):
            pass
        self._on_wake(qids)

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.unlink()


class WakeSender:
    """The sending end, used on the database thread right after a commit."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def send(self, targets: Mapping[str, Iterable[int]]) -> None:
        """Send each wake-up address the ids of its queues that have news. Addresses
        must have passed :func:`is_wake_address`."""
        for wake, qids in targets.items():
            try:
                self._sock.sendto(",".join(map(str, qids)).encode(), _address(wake))
            except (BlockingIOError, InterruptedError):
                pass  # its buffer is full of wake-ups already
            except ConnectionRefusedError:
                if not wake.startswith("@"):
                    _remove_stale_socket(wake)
            except OSError:
                pass

    def close(self) -> None:
        self._sock.close()


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file nobody listens on any more (never anything else)."""
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)


class ExitWatcher:
    """Calls ``on_exit()`` when any watched process exits (Linux pidfds)."""

    def __init__(self, on_exit: Callable[[], None]) -> None:
        self._on_exit = on_exit
        self._fds: dict[int, int] = {}
        self._loop = asyncio.get_running_loop()

    def watch(self, pids: Iterable[int]) -> None:
        wanted = set(pids)
        for pid in list(self._fds):
            if pid not in wanted:
                self._forget(pid)
        if not hasattr(os, "pidfd_open"):
            return
        for pid in wanted - self._fds.keys():
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                self._loop.call_soon(self._on_exit)
                continue
            except OSError:
                continue
            self._fds[pid] = fd
            self._loop.add_reader(fd, self._exited, pid)

    def _exited(self, pid: int) -> None:
        self._forget(pid)
        self._on_exit()

    def _forget(self, pid: int) -> None:
        fd = self._fds.pop(pid)
        self._loop.remove_reader(fd)
        os.close(fd)

    def close(self) -> None:
        for pid in list(self._fds):
            self._forget(pid)


def host_identity() -> str:
    """This host as far as pids and wake-up sockets go: the host name plus the pid
    namespace, so containers sharing a hostname and a volume never judge each
    other's pids."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/{namespace}"


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs on this host (a zombie counts as dead)."""
    if not 0 < pid < 2**31:
        return False  # kill(0 or -1) would signal groups of processes, not one
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
