"""The outbox relay: publishes committed outbox rows, in order, with broker confirmation.

One relay per outbox table is active at a time: it holds a lease (a row in
``<table>_lease`` with an expiry in database time) and renews it with every batch.
Other relays, in this or other processes, stand by and take over when the lease
expires or is released. Each batch is read in sequence order, published as one
broker batch, and only then deleted (or marked sent); a failed publish marks nothing,
so the same batch is retried after a backoff and nothing is skipped or reordered.
Delivery is at least once: a batch the broker stored in part before failing is
published again in full, so consumers deduplicate with :class:`herald.inbox.Inbox`.

An event the broker refuses for good (:class:`herald.MessageTooLargeError`, or
:class:`herald.HorizonError` for one scheduled further ahead than it keeps any) cannot
block the ones after it: it moves to the ``<outbox>_refused`` table with the reason
(:meth:`Outbox.refused` lists them), an error is logged, and relaying goes on.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..broker import Broker
from ..bus import Bus
from ..errors import BrokerError, HorizonError, MessageTooLargeError, PublishError, TimeoutError
from ..message import Message
from .staging import Outbox
from .tables import insert_ignoring_duplicates, row_message, row_values

__all__ = ["OutboxRelay"]

log = logging.getLogger("herald.outbox")
_UNIX_EPOCH_JULIAN_DAY = 2440587.5
_MARK_CHUNK = 500


def _db_now(dialect: str) -> sa.ColumnElement[Any]:
    """The database's clock in Unix seconds, so that relays on several hosts agree."""
    if dialect == "postgresql":
        return sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Double())
    if dialect == "sqlite":
        return (sa.func.julianday("now") - _UNIX_EPOCH_JULIAN_DAY) * 86400.0
    return sa.literal(time.time(), sa.Double())


class _Lease:
    """Exclusive right to relay one outbox, held until ``expires_at`` (database time)."""

    def __init__(self, table: sa.Table, name: str, holder: str, ttl: float) -> None:
        self.table = table
        self.name = name
        self.holder = holder
        self.ttl = ttl

    async def take(self, conn: AsyncConnection) -> bool:
        """Acquire or renew the lease in ``conn``'s transaction; False if another holds it."""
        t = self.table
        now = _db_now(conn.dialect.name)
        renewed = await conn.execute(
            sa.update(t)
            .where(t.c.name == self.name, sa.or_(t.c.holder == self.holder, t.c.expires_at < now))
            .values(holder=self.holder, expires_at=now + self.ttl)
        )
        if renewed.rowcount == 1:
            return True
        created = await conn.execute(
            insert_ignoring_duplicates(t, conn.dialect.name).values(
                name=self.name, holder=self.holder, expires_at=now + self.ttl
            )
        )
        return created.rowcount == 1

    async def release(self, conn: AsyncConnection) -> None:
        t = self.table
        await conn.execute(
            sa.update(t)
            .where(t.c.name == self.name, t.c.holder == self.holder)
            .values(expires_at=0.0)
        )


class OutboxRelay:
    """Publishes an :class:`~herald.outbox.Outbox` through a bus (or a bare broker).

    ``run()`` works until cancelled; ``drain()`` publishes what is pending and
    returns. ``batch_size`` rows are published per broker call; an idle relay looks
    for new rows every ``poll_interval`` seconds, or at once when woken (staging
    sessions wake relays of the same process on commit). Broker and database errors
    are logged and retried with exponential backoff up to ``max_backoff`` seconds.
    ``keep_sent=True`` keeps published rows with ``sent_at`` set (prune them with
    :meth:`Outbox.prune`) instead of deleting them. ``lease_ttl`` bounds how long a
    crashed relay blocks a standby; a publish that takes longer than a third of it
    counts as failed, so two relays never publish at the same time.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        bus: Bus | Broker,
        outbox: Outbox,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        keep_sent: bool = False,
        lease_ttl: float = 30.0,
        max_backoff: float = 30.0,
        name: str | None = None,
    ) -> None:
        if batch_size < 1 or lease_ttl <= 0 or poll_interval <= 0:
            raise ValueError("batch_size, poll_interval and lease_ttl must be positive")
        self.engine = engine
        self.broker = bus.broker if isinstance(bus, Bus) else bus
        self._send = bus.send if isinstance(bus, Bus) else bus.publish
        self.outbox = outbox
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.keep_sent = keep_sent
        self.lease_ttl = lease_ttl
        self.max_backoff = max_backoff
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.published = 0
        """Messages published (and marked) by this relay so far."""
        self.active = False
        """Whether this relay held the lease at its last attempt."""
        self._lease = _Lease(outbox.lease_table, outbox.name, self.name, lease_ttl)
        self._wakeup = asyncio.Event()
        self._step_lock = asyncio.Lock()
        self._running = False

    def __repr__(self) -> str:
        return f"OutboxRelay({self.outbox.name!r}, name={self.name!r})"

    def wake(self) -> None:
        """Look for new rows now instead of at the next poll (no effect during backoff)."""
        self._wakeup.set()

    async def run(self) -> None:
        """Relay until cancelled; releases the lease on the way out."""
        self._running = True
        self.outbox.register(self)
        failures = backlog = 0
        try:
            while True:
                self._wakeup.clear()
                try:
                    count = await self._step()
                except (BrokerError, SQLAlchemyError, OSError) as exc:
                    failures += 1
                    delay = min(0.1 * 2 ** min(failures - 1, 16), self.max_backoff)
                    log.warning(
                        "outbox %s: %s (attempt %d); retrying the same batch in %.1fs",
                        self.outbox.name,
                        _describe(exc),
                        failures,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                if failures:
                    log.info(
                        "outbox %s: publishing again after %d failures", self.outbox.name, failures
                    )
                    failures = 0
                if count == self.batch_size:
                    backlog += count
                    continue
                if backlog and count is not None:
                    log.info("outbox %s: caught up on %d events", self.outbox.name, backlog + count)
                backlog = 0
                await self._idle()
        finally:
            self.outbox.unregister(self)
            self._running = False
            await asyncio.shield(self._release())

    async def drain(self, *, timeout: float | None = None) -> int:
        """Publish every row committed by now; return how many. Errors propagate.

        Waits for the lease while another relay holds it; raises
        :class:`herald.TimeoutError` after ``timeout`` seconds of waiting.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        total = 0
        try:
            while True:
                count = await self._step()
                if count is None:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise TimeoutError(
                            f"outbox {self.outbox.name}: another relay holds the lease"
                        )
                    await asyncio.sleep(min(self.poll_interval, 0.2))
                    continue
                total += count
                if count < self.batch_size:
                    return total
        finally:
            if not self._running:
                await self._release()

    async def _idle(self) -> None:
        with contextlib.suppress(builtins.TimeoutError):
            # an idle active relay still renews its lease in time
            async with asyncio.timeout(min(self.poll_interval, self.lease_ttl / 3)):
                await self._wakeup.wait()

    async def _step(self) -> int | None:
        """Publish one batch; the count published, or None without the lease."""
        async with self._step_lock:
            async with self.engine.begin() as conn:
                leader = await self._lease.take(conn)
                rows = (await conn.execute(self._pending_query())).all() if leader else []
            if leader != self.active:
                self.active = leader
                state = "is now the active relay" if leader else "stands by (lease held elsewhere)"
                log.info("outbox %s: %s %s", self.outbox.name, self.name, state)
            if not leader:
                return None
            if rows:
                try:
                    await self._publish([row_message(row) for row in rows])
                except (MessageTooLargeError, HorizonError) as exc:
                    await self._refuse(rows, exc)
                    return len(rows)
                marking = asyncio.ensure_future(self._mark([row.seq for row in rows]))
                try:
                    await asyncio.shield(marking)
                except asyncio.CancelledError:
                    await marking  # what was published is marked before stopping
                    raise
                log.debug("outbox %s: published %d", self.outbox.name, len(rows))
            return len(rows)

    def _pending_query(self) -> sa.Select[Any]:
        t = self.outbox.table
        return sa.select(t).where(t.c.sent_at.is_(None)).order_by(t.c.seq).limit(self.batch_size)

    async def _publish(self, messages: Sequence[Message]) -> None:
        limit = self.lease_ttl / 3
        try:
            async with asyncio.timeout(limit):
                await self._send(messages)
        except builtins.TimeoutError as exc:
            raise PublishError(
                f"broker did not confirm {len(messages)} messages within {limit:.1f}s"
            ) from exc

    async def _refuse(self, rows: Sequence[Any], exc: MessageTooLargeError | HorizonError) -> None:
        """Move the row the broker refused to the refused table (holding the lease)."""
        (row,) = [row for row in rows if row.message_id == exc.message_id] or [None]
        if row is None:
            raise exc
        log.error(
            "outbox %s: %s %s refused for good: %s; moved to %s",
            self.outbox.name,
            row.type,
            row.message_id,
            exc,
            self.outbox.refused_table.fullname,
        )
        async with self.engine.begin() as conn:
            if not await self._lease.take(conn):
                return
            await conn.execute(
                sa.insert(self.outbox.refused_table).values(
                    **row_values(row_message(row)),
                    staged_at=row.staged_at,
                    refused_at=datetime.now(UTC),
                    reason=str(exc),
                )
            )
            await conn.execute(
                sa.delete(self.outbox.table).where(self.outbox.table.c.seq == row.seq)
            )

    async def _mark(self, seqs: list[int]) -> None:
        t = self.outbox.table
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            for start in range(0, len(seqs), _MARK_CHUNK):
                chosen = t.c.seq.in_(seqs[start : start + _MARK_CHUNK])
                if self.keep_sent:
                    await conn.execute(sa.update(t).where(chosen).values(sent_at=now))
                else:
                    await conn.execute(sa.delete(t).where(chosen))
        self.published += len(seqs)

    async def _release(self) -> None:
        try:
            async with self.engine.begin() as conn:
                await self._lease.release(conn)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("outbox %s: could not release the lease: %s", self.outbox.name, exc)
        self.active = False


def _describe(exc: BaseException) -> str:
    kind = "broker" if isinstance(exc, BrokerError) else "database"
    return f"{kind} error {type(exc).__name__}: {exc}".splitlines()[0]
