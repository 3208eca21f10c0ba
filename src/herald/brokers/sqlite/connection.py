"""The broker's connection: one thread, group commit, a deadline on every write.

The connection lives on one dedicated thread. Whatever operations (publishes, acks,
claims, ...) are queued while a transaction runs go together into the next one, so
500 concurrent ``publish()`` calls cost a handful of commits, not 500. If a batch
fails for a reason of its own, it is rolled back and its operations are run again one
per transaction, so one bad operation fails alone; if it failed because the database
stayed busy, every operation in it fails with that error.

A transaction first takes the writer lock (:mod:`.lock`), then ``BEGIN IMMEDIATE``.
Both wait at most ``timeout`` seconds in all: a busy or locked database
(``SQLITE_BUSY``, ``SQLITE_LOCKED``) is retried, rolled back each time, until the
deadline, then the operations fail with :class:`herald.BrokerError`. The event loop
never waits for any of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ...errors import BrokerError, HeraldError
from .errors import TABLE, is_transient
from .lock import WriterLock
from .maintenance import Maintenance
from .settings import SQLiteSettings
from .store import Store
from .topology import prepare
from .wakeup import host_identity

__all__ = ["Committer", "Operation"]

T = TypeVar("T")
log = logging.getLogger("herald.brokers.sqlite")
Operation = Callable[[Store], T]
_BUSY_SLICE = 0.1
"""Longest wait inside SQLite's own busy handler before the deadline is checked."""


class _Pending:
    __slots__ = ("as_", "doing", "future", "operation")

    def __init__(
        self,
        operation: Callable[[Store], Any],
        doing: str,
        as_: type[HeraldError] | None,
        future: asyncio.Future[Any],
    ) -> None:
        self.operation = operation
        self.doing = doing
        self.as_ = as_
        self.future = future


class _Busy(Exception):
    """A batch failed because the database stayed busy: fail all of it, retry none."""


class Committer:
    """One SQLite connection, its thread, and the queue of operations waiting for it."""

    def __init__(self, settings: SQLiteSettings, after_commit: Callable[[Store], None]) -> None:
        self.settings = settings
        self.path = settings.path
        self._after_commit = after_commit
        self._thread = _Thread(f"herald-sqlite {self.path.name}")
        self._pending: list[_Pending] = []
        self._acks: list[tuple[int, int, object]] | None = None
        self._acked: asyncio.Future[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._store: Store | None = None
        self._lock: WriterLock | None = None
        self._maintenance: Maintenance | None = None

    async def open(self) -> None:
        try:
            with TABLE.converting(f"opening the SQLite broker file {self.path}"):
                self._store = await self._thread.call(self._open)
        except BaseException:
            self._thread.stop()
            raise
        self._maintenance = Maintenance(self.settings)

    def _open(self) -> Store:
        settings = self.settings
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(settings.lock_path)
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=min(settings.timeout, _BUSY_SLICE),
                isolation_level=None,
                check_same_thread=False,
            )
        except BaseException:
            lock.close()
            raise
        try:
            conn.execute("PRAGMA journal_size_limit = 67108864")
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            deadline = time.monotonic() + settings.timeout
            lock.acquire(deadline)
            try:
                _retrying(
                    deadline,
                    functools.partial(
                        prepare,
                        conn,
                        synchronous=settings.synchronous,
                        lease=settings.lease,
                        retain=settings.retain,
                    ),
                )
            except _Busy as exc:
                raise exc.__cause__ from None  # type: ignore[misc]
            finally:
                lock.release()
        except BaseException:
            conn.close()
            lock.close()
            raise
        self._lock = lock
        return Store(conn, self.path, host_identity())

    @property
    def closed(self) -> bool:
        return self._store is None

    def submit(
        self,
        operation: Callable[[Store], T],
        doing: str,
        as_: type[HeraldError] | None = None,
    ) -> asyncio.Future[T]:
        """Queue ``operation`` for the next transaction; the future gets its result,
        or the Herald error for what went wrong while ``doing`` it."""
        if self._store is None:
            raise BrokerError(f"{doing} failed: the SQLite broker {self.path} is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(operation, doing, as_, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="herald-sqlite-commit")
        return future

    def ack(self, seq: int, consumer: int, attempt: object) -> asyncio.Future[None]:
        """Queue the ack of a leased row (``attempt`` as leased) for the next
        transaction, in one statement with the acks queued with it; they share the
        future (one wake-up for the whole group), and fail or succeed together."""
        acks = self._acks
        if acks is None or self._acked is None:
            acks = self._acks = []
            operation = functools.partial(Store.ack_all, acks=acks)
            self._acked = self.submit(operation, "acking messages")
        acks.append((seq, consumer, attempt))
        return self._acked

    async def run(
        self, operation: Callable[[Store], T], doing: str, as_: type[HeraldError] | None = None
    ) -> T:
        return await self.submit(operation, doing, as_)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            self._acks = self._acked = None  # later acks go in the next transaction
            try:
                outcomes = await self._thread.call(self._execute, batch)
            except Exception as exc:  # a bug or a dying thread: fail the batch, not the loop
                outcomes = [(False, exc)] * len(batch)
            if self._maintenance is not None:
                self._maintenance.wrote()
            for item, (ok, value) in zip(batch, outcomes, strict=True):
                if item.future.done():
                    continue
                if ok:
                    item.future.set_result(value)
                else:
                    item.future.set_exception(TABLE.convert(value, item.doing, item.as_))

    def _execute(self, batch: list[_Pending]) -> list[tuple[bool, Any]]:
        store = self._store
        if store is None:
            return [(False, BrokerError(f"the SQLite broker {self.path} is closed"))] * len(batch)
        if len(batch) > 1:
            try:
                return self._transaction(store, batch)
            except _Busy as exc:
                return [(False, exc.__cause__)] * len(batch)
            except Exception:  # each operation is tried alone below
                pass
        outcomes: list[tuple[bool, Any]] = []
        for item in batch:
            try:
                outcomes.extend(self._transaction(store, [item]))
            except _Busy as exc:
                outcomes.append((False, exc.__cause__))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes

    def _transaction(self, store: Store, batch: list[_Pending]) -> list[tuple[bool, Any]]:
        deadline = time.monotonic() + self.settings.timeout
        lock = self._lock
        assert lock is not None
        try:
            lock.acquire(deadline)
        except Exception as exc:
            raise _Busy from exc
        try:
            results = _retrying(deadline, functools.partial(self._attempt, store, batch))
        finally:
            lock.release()
        if store.woken or store.freed:
            try:
                self._after_commit(store)
            except Exception:  # committed already: a lost wake-up only costs a poll
                log.exception("waking consumers of %s failed", self.path)
            store.woken.clear()
            store.freed.clear()
        return results

    def _attempt(self, store: Store, batch: list[_Pending]) -> list[tuple[bool, Any]]:
        conn = store.conn
        conn.execute("BEGIN IMMEDIATE")
        store.woken.clear()
        store.freed.clear()
        try:
            results = [(True, item.operation(store)) for item in batch]
            conn.execute("COMMIT")
        except BaseException:
            store.rolled_back()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    async def close(self) -> None:
        """Finish what is queued, then close the connection and its thread."""
        while self._drainer is not None and not self._drainer.done():
            await asyncio.shield(self._drainer)
        store, self._store = self._store, None
        if store is not None:
            await self._thread.call(store.conn.close)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self._maintenance is not None:
            self._maintenance.close()
            self._maintenance = None
        self._thread.stop()


def _retrying(deadline: float, attempt: Callable[[], T]) -> T:
    """``attempt()``, again while the database is busy, until ``deadline``."""
    pause = 0.001
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if not is_transient(exc):
                raise
            if time.monotonic() + pause >= deadline:
                raise _Busy from exc
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


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
