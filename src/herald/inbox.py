"""Inbox: handle each message once, even though brokers deliver at least once.

A handler claims the message id in the same database transaction that performs its
effect. The first claim inserts ``(consumer, message_id)`` and returns True; a
redelivery of a message whose effect committed finds the row and returns False, so
the handler returns without doing anything twice. If the handler's transaction rolls
back, the claim goes with it and the retry claims again. Two concurrent claims of one
id (two workers got the same redelivery) cannot both win: the database's unique key
makes the second wait for the first transaction and then see the row.

>>> import asyncio, herald
>>> from sqlalchemy.ext.asyncio import create_async_engine, async_sessionmaker
>>> from herald.inbox import Inbox
>>> inbox = Inbox()
>>> async def main() -> list[bool]:
...     engine = create_async_engine("sqlite+aiosqlite://")
...     await inbox.create(engine)
...     sessions = async_sessionmaker(engine)
...     results = []
...     for _ in range(2):  # the same message delivered twice
...         async with sessions() as session, session.begin():
...             results.append(await inbox.claim_id(session, "payroll.employee.created", "m1"))
...     await engine.dispose()
...     return results
>>> asyncio.run(main())
[True, False]

In a handler, with ``ctx`` the :class:`herald.Context`::

    async with sessions() as session, session.begin():
        if not await inbox.claim(session, ctx):
            return  # already handled
        session.add(PayrollRecord(guid=event.guid))

Or let :class:`InboxMiddleware` do it around every handler of a service: it opens a
session, claims the message, hands the session to the handler as
``Inbox.session(ctx)``, and commits when the outcome is an ack (a commit that fails
turns the ack into a retry); a message already handled is acked without running the
handler. It also forgets claims older than its ``retention`` (default 7 days), so the
table does not grow without bound::

    payroll = herald.Service("payroll", middleware=[InboxMiddleware(inbox, engine)])

    @payroll.on(EmployeeCreated)
    async def open_record(event: EmployeeCreated, ctx: herald.Context) -> None:
        Inbox.session(ctx).add(PayrollRecord(guid=event.guid))

PostgreSQL and SQLite use ``INSERT ... ON CONFLICT DO NOTHING``; other databases
insert in a savepoint and take a unique-key violation as "already claimed".
Database errors propagate unchanged: they belong to the handler's transaction, and
the runtime retries the delivery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .context import Context
from .errors import ConfigurationError
from .middleware import ACK, Middleware, Next, Outcome, failure
from .outbox.tables import Executor, dialect_of, insert_ignoring_duplicates

__all__ = ["Inbox", "InboxMiddleware"]

log = logging.getLogger("herald.inbox")
_SESSION = "herald.inbox.session"


class Inbox:
    """The table of handled ``(consumer, message_id)`` pairs, on its own ``MetaData``
    unless ``metadata=`` puts it in the application's."""

    def __init__(
        self,
        table_name: str = "herald_inbox",
        *,
        metadata: sa.MetaData | None = None,
        schema: str | None = None,
    ) -> None:
        self.metadata = metadata if metadata is not None else sa.MetaData()
        self.table = sa.Table(
            table_name,
            self.metadata,
            sa.Column("consumer", sa.String(255), primary_key=True),
            sa.Column("message_id", sa.String(255), primary_key=True),
            sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
            schema=schema,
        )

    def __repr__(self) -> str:
        return f"Inbox({self.table.fullname!r})"

    async def create(self, engine: AsyncEngine) -> None:
        """Create the table unless it exists."""
        async with engine.begin() as conn:
            await conn.run_sync(self.metadata.create_all, [self.table])

    async def drop(self, engine: AsyncEngine) -> None:
        """Drop the table if it exists."""
        async with engine.begin() as conn:
            await conn.run_sync(self.metadata.drop_all, [self.table])

    @staticmethod
    def session(ctx: Context) -> AsyncSession:
        """The session :class:`InboxMiddleware` opened for this delivery."""
        try:
            session: AsyncSession = ctx.state[_SESSION]
        except KeyError:
            raise ConfigurationError(
                f"no inbox session for {ctx.queue}: add InboxMiddleware to the service"
            ) from None
        return session

    async def claim(self, executor: Executor, ctx: Context) -> bool:
        """Claim ``ctx.message`` for the handler's queue (``ctx.queue``) in the current
        transaction; False if it was already handled (or is being handled right now
        by a transaction that then commits)."""
        return await self.claim_id(executor, ctx.queue, ctx.message.id)

    async def claim_id(self, executor: Executor, consumer: str, message_id: str) -> bool:
        """Claim ``message_id`` for ``consumer``; see :meth:`claim`."""
        values = {
            "consumer": consumer,
            "message_id": message_id,
            "received_at": datetime.now(UTC),
        }
        dialect = await dialect_of(executor)
        if dialect in ("postgresql", "sqlite"):
            statement = insert_ignoring_duplicates(self.table, dialect).values(**values)
            result = cast("sa.CursorResult[Any]", await executor.execute(statement))
            return result.rowcount == 1
        savepoint = executor.begin_nested()
        try:
            async with savepoint:
                await executor.execute(sa.insert(self.table).values(**values))
        except IntegrityError:
            return False
        return True

    async def handled(
        self, executor: AsyncEngine | AsyncSession, consumer: str, message_id: str
    ) -> bool:
        """Whether ``message_id`` was claimed (and committed) for ``consumer``."""
        t = self.table
        query = sa.select(sa.func.count()).where(
            t.c.consumer == consumer, t.c.message_id == message_id
        )
        if isinstance(executor, AsyncEngine):
            async with executor.connect() as conn:
                return bool((await conn.execute(query)).scalar_one())
        return bool((await executor.execute(query)).scalar_one())

    async def prune(self, engine: AsyncEngine, older_than: timedelta) -> int:
        """Forget claims older than ``older_than``; return how many were deleted.

        Keep claims longer than a message can still be redelivered (retries and
        dead-letter replays included), or a late redelivery would run again.
        """
        cutoff = datetime.now(UTC) - older_than
        async with engine.begin() as conn:
            result = await conn.execute(
                sa.delete(self.table).where(self.table.c.received_at < cutoff)
            )
        return int(result.rowcount)


class InboxMiddleware(Middleware):
    """Each handler in one transaction that first claims its message in ``inbox``.

    A message already claimed is acked without running the handler. The handler's
    effect and the claim commit together when the outcome is an ack; any other
    outcome rolls both back. Claims older than ``retention`` are deleted in the
    background, at most every ``prune_every`` seconds (``retention=None`` keeps them).
    """

    def __init__(
        self,
        inbox: Inbox,
        engine: AsyncEngine,
        *,
        retention: timedelta | None = timedelta(days=7),
        prune_every: float = 600.0,
    ) -> None:
        self.inbox = inbox
        self.engine = engine
        self.retention = retention
        self.prune_every = prune_every
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._next_prune = 0.0
        self._pruning: asyncio.Task[None] | None = None

    async def handle(self, ctx: Context, call_next: Next) -> Outcome:
        self._maybe_prune()
        async with self._sessions() as session:
            await session.begin()
            if not await self.inbox.claim(session, ctx):
                await session.rollback()
                log.info("%s %s was handled before; acked again", ctx.message.type, ctx.message.id)
                return ACK
            ctx.state[_SESSION] = session
            outcome = await call_next(ctx)
            if outcome.settlement != "ack":
                await session.rollback()
                return outcome
            try:
                await session.commit()
            except SQLAlchemyError as exc:
                return failure(ctx, exc)
            return outcome

    def _maybe_prune(self) -> None:
        if self.retention is None or time.monotonic() < self._next_prune:
            return
        if self._pruning is not None and not self._pruning.done():
            return
        self._next_prune = time.monotonic() + self.prune_every
        self._pruning = asyncio.create_task(self._prune(self.retention))

    async def _prune(self, retention: timedelta) -> None:
        try:
            pruned = await self.inbox.prune(self.engine, retention)
        except SQLAlchemyError as exc:
            log.warning("pruning inbox %s failed: %s", self.inbox.table.fullname, exc)
            return
        if pruned:
            log.info(
                "inbox %s: forgot %d claims older than %s",
                self.inbox.table.fullname,
                pruned,
                retention,
            )
