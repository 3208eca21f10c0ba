"""Housekeeping off the commit path: checkpoints, giving space back, old dead letters
and history.

SQLite's automatic checkpoint runs inside the ``COMMIT`` that crosses the threshold,
fsyncing while the committing broker (and, with Herald's writer lock, every other
process) waits. Herald turns it off and runs a ``PASSIVE`` checkpoint on a thread and
connection of its own, at most every ``interval`` seconds after writes; passive
checkpoints never block writers, and the log stays small.

The same thread, each time through the writer lock without waiting for it (another
round comes soon when it is busy):

- gives free pages back to the file system: once a quarter of the file (and at
  least 1 MiB) is free, e.g. after a backlog was consumed, ``incremental_vacuum`` a
  step of pages per round and checkpoint, which truncates the file. A round holds
  the writer lock at most 100 ms (400 ms when no write came since the last round),
  stopping mid-step past that; the step starts at 4 MiB and doubles (up to 64 MiB)
  while a round takes under half its time, halves when it takes longer: a busy
  file's writers are not held up, an idle file gives its space back faster;
- then, once no write came since the last round, truncates a log that a burst of
  writes grew past 1 MiB (``journal_size_limit`` alone would keep 64 MiB of it): a
  ``TRUNCATE`` checkpoint under the writer lock, retried a few rounds while a reader
  holds an old snapshot;
- deletes dead letters older than ``dlq_retention``, and retained history older
  than the file's ``retain``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .lock import WriterLock
from .settings import SQLiteSettings
from .topology import retention

__all__ = ["Maintenance"]

log = logging.getLogger("herald.brokers.sqlite")
_MIN_FREE_PAGES = 256
_VACUUM_STEP = 1024
"""Pages moved in the first round (4 MiB at the default page size)."""
_VACUUM_MAX_STEP = 16 * _VACUUM_STEP
_VACUUM_HOLD = 0.1
"""Seconds a round should hold the writer lock at most while the file is written."""
_VACUUM_IDLE_HOLD = 0.4
"""The same once no write came since the last round."""
_PRUNE_STEP = 1000
_LOG_KEPT = 1024 * 1024
"""A log larger than this is truncated once writes pause."""
_LOG_TRIES = 8
_Work = Callable[[sqlite3.Connection], int]


class Maintenance:
    """A thread that checkpoints after writes and reclaims space and old dead letters."""

    def __init__(self, settings: SQLiteSettings, *, interval: float = 0.5) -> None:
        self._settings = settings
        self._interval = interval
        self._retain = settings.retain or 0.0
        """The file's history retention, as last read from it."""
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._dirty = False
        self._log = settings.path.with_name(settings.path.name + "-wal")
        self._log_tries = 0
        self._step = _VACUUM_STEP
        self._thread = threading.Thread(
            target=self._run, name="herald-sqlite-maintenance", daemon=True
        )
        self._thread.start()

    def wrote(self) -> None:
        """Note a commit: a checkpoint follows within ``interval`` seconds."""
        self._dirty = True
        self._wakeup.set()

    def close(self) -> None:
        """Stop after the round under way, if any; do not wait for it."""
        self._stop.set()
        self._wakeup.set()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        lock = WriterLock(self._settings.lock_path)
        next_prune = time.monotonic()
        last_round = float("-inf")
        more = False
        try:
            while True:
                timeout = min(next_prune - time.monotonic(), self._interval if more else 3600)
                self._wakeup.wait(max(0.0, timeout))
                pause = last_round + self._interval - time.monotonic()
                if self._stop.is_set() or (pause > 0 and self._stop.wait(pause)):
                    return
                self._wakeup.clear()
                last_round = time.monotonic()
                try:
                    if conn is None:
                        conn = sqlite3.connect(
                            self._settings.path, timeout=0.1, isolation_level=None
                        )
                        conn.execute(f"PRAGMA synchronous = {self._settings.synchronous}")
                    wrote = self._dirty
                    if wrote or more:
                        self._dirty = False
                        _checkpoint(conn)
                    if wrote:
                        self._log_tries = 0
                    if time.monotonic() >= next_prune:
                        pruned = _locked(lock, conn, self._prune)
                        done = pruned is not None and pruned < _PRUNE_STEP
                        next_prune = time.monotonic() + (self._prune_every() if done else 0)
                    more = self._vacuum(lock, conn, busy=wrote or self._dirty)
                    if not more and self._log_tries < _LOG_TRIES and _size(self._log) > _LOG_KEPT:
                        if wrote or self._dirty:
                            more = True  # truncate it once writes pause
                        else:
                            more = _truncate_log(lock, conn)
                            self._log_tries += more
                except sqlite3.Error as exc:
                    log.debug("maintenance of %s skipped: %s", self._settings.path, exc)
        finally:
            if conn is not None:
                conn.close()
            lock.close()

    def _prune_every(self) -> float:
        """Seconds to the next pruning: a quarter of the shorter retention, within
        0.25 s and 60 s (60 s when nothing expires: the file's retention may change)."""
        periods = [p for p in (self._settings.dlq_retention, self._retain) if p]
        return min(60.0, max(0.25, min(periods) / 4)) if periods else 60.0

    def _prune(self, conn: sqlite3.Connection) -> int:
        """Delete up to a step of old dead letters and of old history; return the
        larger count (a full step: more may remain)."""
        pruned = 0
        now = time.time()
        self._retain = retention(conn)
        for table, kept in (
            ("herald_dead_letters", self._settings.dlq_retention),
            ("herald_history", self._retain),
        ):
            if kept:
                cur = conn.execute(
                    f"DELETE FROM {table} WHERE seq IN (SELECT seq FROM {table}"
                    " WHERE stored < ? LIMIT ?)",
                    (now - kept, _PRUNE_STEP),
                )
                pruned = max(pruned, int(cur.rowcount))
        return pruned

    def _vacuum(self, lock: WriterLock, conn: sqlite3.Connection, *, busy: bool) -> bool:
        """Move up to one step of free pages out of the file; return whether more
        remain. The next step is sized by how long this one held the writer lock."""
        hold = _VACUUM_HOLD if busy else _VACUUM_IDLE_HOLD
        free: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
        pages: int = conn.execute("PRAGMA page_count").fetchone()[0]
        if free < _MIN_FREE_PAGES or free * 4 < pages:
            self._step = _VACUUM_STEP
            return False
        step = min(free, self._step)

        def vacuum(conn: sqlite3.Connection) -> int:
            # Python steps a PRAGMA statement once, and each step frees one page.
            # Each also takes the GIL back: a busy event loop in this process can
            # make a step slow, so the round ends early past its time.
            for done in range(1, step + 1):
                conn.execute("PRAGMA incremental_vacuum(1)")
                if time.monotonic() - started > hold:
                    return done
            return step

        started = time.monotonic()
        moved = _locked(lock, conn, vacuum)
        if moved is None:
            return True
        held = time.monotonic() - started
        if held < hold / 2:
            self._step = min(2 * self._step, _VACUUM_MAX_STEP)
        elif held > hold:
            self._step = max(self._step // 2, _MIN_FREE_PAGES)
        _checkpoint(conn)
        return free > moved


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _truncate_log(lock: WriterLock, conn: sqlite3.Connection) -> bool:
    """Checkpoint the whole log and truncate it; return whether to try again (a
    writer or a reader was in the way)."""
    if not lock.try_acquire():
        return True
    try:
        busy: int = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    finally:
        lock.release()
    return bool(busy)


def _locked(lock: WriterLock, conn: sqlite3.Connection, work: _Work) -> int | None:
    """``work(conn)`` in a write transaction, if the writer lock is free now."""
    if not lock.try_acquire():
        return None
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return done
    finally:
        lock.release()
