"""Moving the write-ahead log back into the database file, off the commit path.

SQLite's automatic checkpoint runs inside the ``COMMIT`` that crosses the threshold,
fsyncing while the committing broker (and, with Herald's writer lock, every other
process) waits. Herald turns it off and runs a ``PASSIVE`` checkpoint on a thread
and connection of its own at most every ``interval`` seconds after writes; passive
checkpoints never block writers, and the log stays small.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

__all__ = ["Checkpointer"]

log = logging.getLogger("herald.brokers.sqlite")


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` now and then, on its own thread."""

    def __init__(self, path: Path, *, synchronous: str, interval: float = 0.5) -> None:
        self._path = path
        self._synchronous = synchronous
        self._interval = interval
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="herald-sqlite-checkpoint")
        self._conn: sqlite3.Connection | None = None
        self._running: Future[None] | None = None
        self._last = time.monotonic()

    def wrote(self) -> None:
        """Note a commit; start a checkpoint if the last one is old enough and done."""
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        if self._running is not None and not self._running.done():
            return
        self._last = now
        self._running = self._executor.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self._path, timeout=1.0, isolation_level=None)
                self._conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.debug("checkpoint of %s skipped: %s", self._path, exc)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the connection once a running checkpoint is done; do not wait."""
        self._executor.submit(self._close)
        self._executor.shutdown(wait=False)
