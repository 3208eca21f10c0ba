"""Group commit: operations queued by many coroutines run in one transaction.

The connection lives on one dedicated thread. Whatever operations (publishes, acks,
claims, ...) are queued while a transaction runs go together into the next one, so
500 concurrent ``publish()`` calls cost a handful of commits, not 500. If a batch
fails, it is rolled back and its operations are run again one per transaction, so
one bad operation fails alone.

Writers of all processes take turns through an exclusive ``flock`` on ``<db>.lock``
before ``BEGIN IMMEDIATE``: the kernel hands the lock straight to a waiting process,
whereas SQLite's own busy handler sleeps in growing steps and lets a busy publisher
starve consumers (and their acks) for tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import BrokerError
from .sqlite_checkpoint import Checkpointer
from .sqlite_store import Store
from .sqlite_wakeup import host_identity

__all__ = ["Committer", "Operation"]

T = TypeVar("T")
log = logging.getLogger("herald.brokers.sqlite")
Operation = Callable[[Store], T]
_Pending = tuple[Callable[[Store], Any], "asyncio.Future[Any]"]


class Committer:
    """One SQLite connection, its thread, and the queue of operations waiting for it."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str,
        busy_timeout: float,
        after_commit: Callable[[Store], None],
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._after_commit = after_commit
        self._thread = _Thread(f"herald-sqlite {path.name}")
        self._pending: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None
        self._store: Store | None = None
        self._lock_fd = -1
        self._checkpointer = Checkpointer(path, synchronous=synchronous)

    async def open(self) -> None:
        try:
            self._store = await self._thread.call(self._open)
        except (sqlite3.Error, OSError) as exc:
            self._thread.stop()
            raise BrokerError(f"cannot open SQLite broker file {self.path}: {exc}") from exc

    def _open(self) -> Store:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA journal_size_limit = 67108864")
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            store = Store(conn, host_identity())
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                store.create_schema()
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        except BaseException:
            conn.close()
            os.close(self._lock_fd)
            raise
        return store

    def submit(self, operation: Callable[[Store], T]) -> asyncio.Future[T]:
        """Queue ``operation`` for the next transaction; the future gets its result."""
        if self._store is None:
            raise BrokerError(f"SQLite broker {self.path} is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((operation, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="herald-sqlite-commit")
        return future

    async def run(self, operation: Callable[[Store], T]) -> T:
        return await self.submit(operation)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            outcomes = await self._thread.call(self._execute, batch)
            self._checkpointer.wrote()
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _execute(self, batch: list[_Pending]) -> list[tuple[bool, Any]]:
        store = self._store
        if store is None:
            error = BrokerError(f"SQLite broker {self.path} is closed")
            return [(False, error)] * len(batch)
        if len(batch) > 1:
            try:
                return self._transaction(store, batch)
            except Exception:  # each operation is retried alone below
                pass
        outcomes: list[tuple[bool, Any]] = []
        for item in batch:
            try:
                outcomes.extend(self._transaction(store, [item]))
            except Exception as exc:
                outcomes.append((False, self._convert(exc)))
        return outcomes

    def _transaction(self, store: Store, batch: list[_Pending]) -> list[tuple[bool, Any]]:
        conn = store.conn
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            conn.execute("BEGIN IMMEDIATE")
            store.woken.clear()
            try:
                results = [(True, operation(store)) for operation, _ in batch]
                conn.execute("COMMIT")
            except BaseException:
                store.woken.clear()
                store.forget_cache()
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        if store.woken:
            try:
                self._after_commit(store)
            except Exception:  # committed already: a lost wake-up only costs a poll
                log.exception("waking consumers of %s failed", self.path)
            store.woken.clear()
        return results

    def _convert(self, exc: Exception) -> Exception:
        if isinstance(exc, sqlite3.Error):
            converted = BrokerError(f"SQLite broker {self.path}: {exc}")
            converted.__cause__ = exc
            return converted
        return exc

    async def close(self) -> None:
        """Finish what is queued, then close the connection and its thread."""
        while self._drainer is not None and not self._drainer.done():
            await asyncio.shield(self._drainer)
        store, self._store = self._store, None
        if store is not None:
            await self._thread.call(store.conn.close)
            os.close(self._lock_fd)
            self._checkpointer.close()
        self._thread.stop()


class _Thread:
    """One daemon thread running jobs in order; results come back to the event loop
    with a single ``call_soon_threadsafe`` (leaner than an executor's futures)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = function(*args)
            except BaseException as exc:
                outcome: Callable[[], None] = functools.partial(_fail, future, exc)
            else:
                outcome = functools.partial(_succeed, future, result)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(outcome)

        self._jobs.put(job)
        return await future

    def stop(self) -> None:
        self._jobs.put(None)


def _succeed(future: asyncio.Future[T], result: T) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
