"""Transactional outbox: stage events in the same database transaction as the data.

A service that writes a row and must announce it cannot publish to the broker inside
its transaction (the broker may be down, the transaction may still roll back) nor
after it (the process may die in between). Instead it *stages* the event in an
outbox table within the very transaction that writes the row; an
:class:`~herald.outbox_relay.OutboxRelay` later publishes committed rows with broker
confirmation and then deletes them (or marks them sent). An event is published if and
only if its transaction committed, at least once, in commit order per key.

>>> import asyncio, herald
>>> from sqlalchemy.ext.asyncio import create_async_engine, async_sessionmaker
>>> from herald.outbox import Outbox, OutboxRelay
>>> class EmployeeCreated(herald.Event, type="employee.created"):
...     guid: str
>>> outbox = Outbox(source="employees")
>>> async def main() -> list[str]:
...     engine = create_async_engine("sqlite+aiosqlite://")
...     await outbox.create(engine)
...     sessions = async_sessionmaker(engine)
...     async with sessions() as session, session.begin():
...         staged = await outbox.stage(session, EmployeeCreated(guid="g1"), key="g1")
...     async with herald.connect("memory://outbox-doctest") as bus:
...         sent = await OutboxRelay(engine, bus, outbox).drain()
...     await engine.dispose()
...     return [staged.type, staged.subject, str(sent)]
>>> asyncio.run(main())
['employee.created', 'g1', '1']

Errors from the database raised by :meth:`Outbox.stage` are the application's own
transaction failing, so they propagate unchanged (``sqlalchemy.exc.SQLAlchemyError``).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from .codec import CodecRegistry, default_codecs
from .errors import ConfigurationError
from .event import Event
from .message import Message, parse_time

try:
    import sqlalchemy as sa
    from sqlalchemy import event as sa_event
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise ConfigurationError(
        "the outbox and inbox need SQLAlchemy: pip install 'herald[sql]'"
    ) from exc

__all__ = [
    "Executor",
    "Outbox",
    "OutboxRelay",
    "dialect_of",
    "insert_ignoring_duplicates",
    "row_message",
]

Executor = AsyncSession | AsyncConnection
"""Where staging and claiming run: the application's session or connection."""


class _Wakeable(Protocol):
    def wake(self) -> None: ...


def insert_ignoring_duplicates(table: sa.Table, dialect: str) -> sa.Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` for PostgreSQL and SQLite (check rowcount)."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise ConfigurationError(f"no conflict-free insert for the {dialect!r} database")


async def dialect_of(executor: Executor) -> str:
    """The SQLAlchemy dialect name (``sqlite``, ``postgresql``, ...) behind ``executor``."""
    connection = await executor.connection() if isinstance(executor, AsyncSession) else executor
    return connection.dialect.name


def _outbox_table(name: str, metadata: sa.MetaData, schema: str | None) -> sa.Table:
    table = sa.Table(
        name,
        metadata,
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("message_id", sa.String(255), nullable=False, unique=True),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("subject", sa.String(255), nullable=True),
        sa.Column("time", sa.String(40), nullable=False),
        sa.Column("datacontenttype", sa.String(255), nullable=False),
        sa.Column("specversion", sa.String(16), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("staged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        schema=schema,
    )
    pending = table.c.sent_at.is_(None)
    sa.Index(f"ix_{name}_pending", table.c.seq, sqlite_where=pending, postgresql_where=pending)
    return table


def _lease_table(name: str, metadata: sa.MetaData, schema: str | None) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        schema=schema,
    )


class Outbox:
    """An outbox table (``table_name``) and its relay lease table (``<table_name>_lease``).

    The tables live on their own ``MetaData`` unless ``metadata=`` puts them in the
    application's (so its migrations create them). ``codecs`` encode events (the
    default JSON codec unless given) and ``source`` is the CloudEvents source of every
    staged message.
    """

    def __init__(
        self,
        table_name: str = "herald_outbox",
        *,
        metadata: sa.MetaData | None = None,
        schema: str | None = None,
        codecs: CodecRegistry | None = None,
        source: str = "herald",
    ) -> None:
        self.metadata = metadata if metadata is not None else sa.MetaData()
        self.table = _outbox_table(table_name, self.metadata, schema)
        self.lease_table = _lease_table(f"{table_name}_lease", self.metadata, schema)
        self.codecs = codecs or default_codecs
        self.source = source
        self._relays: weakref.WeakSet[_Wakeable] = weakref.WeakSet()
        self._hook_key = f"herald.outbox.wake.{id(self)}"

    def __repr__(self) -> str:
        return f"Outbox({self.table.fullname!r})"

    @property
    def name(self) -> str:
        return self.table.fullname

    async def create(self, engine: AsyncEngine) -> None:
        """Create the outbox and lease tables unless they exist."""
        async with engine.begin() as conn:
            await conn.run_sync(self.metadata.create_all, [self.table, self.lease_table])

    async def drop(self, engine: AsyncEngine) -> None:
        """Drop both tables (if they exist); loses staged events."""
        async with engine.begin() as conn:
            await conn.run_sync(self.metadata.drop_all, [self.table, self.lease_table])

    def message(
        self,
        event: Event | Message,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """The envelope that :meth:`stage` stores for ``event`` (same rules as ``Bus.message``)."""
        return self.codecs.envelope(event, source=self.source, key=key, headers=headers)

    async def stage(
        self,
        executor: Executor,
        event: Event | Message,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Store ``event`` in the outbox within ``executor``'s current transaction.

        Returns the :class:`herald.Message` the relay will publish (its id is fixed
        now). With an ``AsyncSession``, relays of this outbox running in this process
        are woken as soon as the transaction commits.
        """
        message = self.message(event, key=key, headers=headers)
        await executor.execute(sa.insert(self.table).values(**self._row(message)))
        self._wake_after_commit(executor)
        return message

    async def stage_many(
        self,
        executor: Executor,
        events: Iterable[Event | Message | tuple[Event | Message, str | None]],
    ) -> list[Message]:
        """Stage several events (``(event, key)`` pairs give keys) in one statement."""
        messages = [
            self.message(item[0], key=item[1]) if isinstance(item, tuple) else self.message(item)
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

    def _row(self, message: Message) -> dict[str, Any]:
        return {
            "message_id": message.id,
            "type": message.type,
            "source": message.source,
            "subject": message.subject,
            "time": message.time.isoformat(),
            "datacontenttype": message.datacontenttype,
            "specversion": message.specversion,
            "headers": json.dumps(dict(message.headers), separators=(",", ":")),
            "body": message.body,
            "staged_at": datetime.now(UTC),
        }

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


def row_message(row: sa.Row[Any]) -> Message:
    """Rebuild the staged :class:`herald.Message` from an outbox row."""
    return Message(
        type=row.type,
        body=bytes(row.body),
        id=row.message_id,
        source=row.source,
        subject=row.subject,
        time=parse_time(row.time),
        datacontenttype=row.datacontenttype,
        headers=json.loads(row.headers),
        specversion=row.specversion,
    )


from .outbox_relay import OutboxRelay  # noqa: E402  (the relay builds on the names above)
