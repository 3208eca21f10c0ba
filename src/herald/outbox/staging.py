"""Staging events in the application's own transaction."""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from opentelemetry.trace import TracerProvider
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from ..broker import MiB
from ..codec import CodecRegistry, default_codecs
from ..errors import MessageTooLargeError
from ..event import Event
from ..message import Message
from ..schedule import due_headers
from ..tracing import stamp
from .tables import (
    Executor,
    lease_table,
    outbox_table,
    refused_table,
    row_message,
    row_values,
)

__all__ = ["Outbox"]


class _Wakeable(Protocol):
    def wake(self) -> None: ...


class Outbox:
    """An outbox table (``table_name``), its relay lease table (``<table_name>_lease``)
    and the table of events the broker refused for good (``<table_name>_refused``).

    The tables live on their own ``MetaData`` unless ``metadata=`` puts them in the
    application's (so its migrations create them). ``codecs`` encode events (the
    default JSON codec unless given) and ``source`` is the CloudEvents source of every
    staged message. ``max_message_bytes`` is the largest body :meth:`stage` accepts
    (default 16 MiB, what Herald's brokers take): an event too large for the broker
    is refused in the staging transaction, not discovered by the relay.
    ``tracer_provider`` records the ``create`` span of each staged event (default:
    OpenTelemetry's global provider; see :func:`herald.tracing.stamp`).
    """

    def __init__(
        self,
        table_name: str = "herald_outbox",
        *,
        metadata: sa.MetaData | None = None,
        schema: str | None = None,
        codecs: CodecRegistry | None = None,
        source: str = "herald",
        max_message_bytes: int = 16 * MiB,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.metadata = metadata if metadata is not None else sa.MetaData()
        self.table = outbox_table(table_name, self.metadata, schema)
        self.lease_table = lease_table(f"{table_name}_lease", self.metadata, schema)
        self.refused_table = refused_table(f"{table_name}_refused", self.metadata, schema)
        self.max_message_bytes = max_message_bytes
        self.codecs = codecs or default_codecs
        self.source = source
        self._relays: weakref.WeakSet[_Wakeable] = weakref.WeakSet()
        self._hook_key = f"herald.outbox.wake.{id(self)}"

    def __repr__(self) -> str:
        return f"Outbox({self.table.fullname!r})"

    @property
    def name(self) -> str:
        return self.table.fullname

    @property
    def tables(self) -> list[sa.Table]:
        return [self.table, self.lease_table, self.refused_table]

    async def create(self, engine: AsyncEngine) -> None:
        """Create the outbox's tables unless they exist."""
        async with engine.begin() as conn:
            await conn.run_sync(self.metadata.create_all, self.tables)

    async def drop(self, engine: AsyncEngine) -> None:
        """Drop the outbox's tables (if they exist); loses staged events."""
        async with engine.begin() as conn:
            await conn.run_sync(self.metadata.drop_all, self.tables)

    def message(
        self,
        event: Event | Message,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """The envelope that :meth:`stage` stores for ``event`` (same rules as
        ``Bus.message``); raises :class:`herald.MessageTooLargeError` for a body over
        ``max_message_bytes``. It carries its creation context (the trace it was
        staged in, see :func:`herald.tracing.stamp`) in its headers."""
        message = self.codecs.envelope(event, source=self.source, key=key, headers=headers)
        if len(message.body) > self.max_message_bytes:
            raise MessageTooLargeError(
                message.id, len(message.body), self.max_message_bytes, f"outbox {self.name}"
            )
        return stamp(message, tracer_provider=self.tracer_provider)

    async def stage(
        self,
        executor: Executor,
        event: Event | Message,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        at: datetime | None = None,
        delay: timedelta | float | None = None,
    ) -> Message:
        """Store ``event`` in the outbox within ``executor``'s current transaction.

        Returns the :class:`herald.Message` the relay will publish (its id is fixed
        now). With an ``AsyncSession``, relays of this outbox running in this process
        are woken as soon as the transaction commits. ``at``/``delay`` schedule it
        as :meth:`herald.Bus.publish` does (the due time counts from now, not from
        when the relay publishes it).
        """
        message = self.message(event, key=key, headers=due_headers(headers, at, delay))
        await executor.execute(sa.insert(self.table).values(**self._row(message)))
        self._wake_after_commit(executor)
        return message

    async def stage_many(
        self,
        executor: Executor,
        events: Iterable[Event | Message | tuple[Event | Message, str | None]],
        *,
        at: datetime | None = None,
        delay: timedelta | float | None = None,
    ) -> list[Message]:
        """Stage several events (``(event, key)`` pairs give keys) in one statement;
        ``at``/``delay`` schedule them all."""
        headers = due_headers(None, at, delay)
        messages = [
            self.message(item[0], key=item[1], headers=headers)
            if isinstance(item, tuple)
            else self.message(item, headers=headers)
            for item in events
        ]
        if messages:
            await executor.execute(sa.insert(self.table), [self._row(m) for m in messages])
            self._wake_after_commit(executor)
        return messages

    async def pending(self, engine: AsyncEngine | Executor) -> int:
        """How many committed events wait to be published."""
        query = sa.select(sa.func.count()).select_from(self.table)
        query = query.where(self.table.c.sent_at.is_(None))
        if isinstance(engine, AsyncEngine):
            async with engine.connect() as conn:
                return int((await conn.execute(query)).scalar_one())
        return int((await engine.execute(query)).scalar_one())

    async def prune(self, engine: AsyncEngine, older_than: timedelta) -> int:
        """Delete rows marked sent (``keep_sent=True`` relays) before ``older_than`` ago."""
        cutoff = datetime.now(UTC) - older_than
        async with engine.begin() as conn:
            result = await conn.execute(sa.delete(self.table).where(self.table.c.sent_at < cutoff))
        return int(result.rowcount)

    def wake(self) -> None:
        """Nudge this process's running relays of this outbox to publish now."""
        for relay in list(self._relays):
            relay.wake()

    def register(self, relay: _Wakeable) -> None:
        """Let :meth:`wake` (and commits of staging sessions) reach ``relay``."""
        self._relays.add(relay)

    def unregister(self, relay: _Wakeable) -> None:
        self._relays.discard(relay)

    async def refused(self, engine: AsyncEngine) -> list[tuple[Message, str]]:
        """Events the broker refused for good, with the reason, oldest first."""
        t = self.refused_table
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.select(t).order_by(t.c.seq))).all()
        return [(row_message(row), row.reason) for row in rows]

    def _row(self, message: Message) -> dict[str, Any]:
        return {**row_values(message), "staged_at": datetime.now(UTC)}

    def _wake_after_commit(self, executor: Executor) -> None:
        if not self._relays or not isinstance(executor, AsyncSession):
            return
        session = executor.sync_session
        if session.info.get(self._hook_key):
            return
        session.info[self._hook_key] = True

        def after_commit(committed: Session) -> None:
            committed.info.pop(self._hook_key, None)
            self.wake()

        sa_event.listen(session, "after_commit", after_commit, once=True)
