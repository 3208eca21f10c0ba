"""The outbox's tables and the SQL both the outbox and the inbox need."""

from __future__ import annotations

import json
from typing import Any

from ..errors import ConfigurationError
from ..headers import time_from
from ..message import Message

try:
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise ConfigurationError(
        "the outbox and inbox need SQLAlchemy: pip install 'herald[sql]'"
    ) from exc

__all__ = [
    "Executor",
    "dialect_of",
    "insert_ignoring_duplicates",
    "lease_table",
    "outbox_table",
    "refused_table",
    "row_message",
    "row_values",
]

Executor = AsyncSession | AsyncConnection
"""Where staging and claiming run: the application's session or connection."""


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


def _message_columns() -> list[sa.Column[Any]]:
    return [
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
    ]


def _seq() -> sa.Column[Any]:
    return sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


def outbox_table(name: str, metadata: sa.MetaData, schema: str | None) -> sa.Table:
    table = sa.Table(
        name,
        metadata,
        _seq(),
        *_message_columns(),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        schema=schema,
    )
    pending = table.c.sent_at.is_(None)
    sa.Index(f"ix_{name}_pending", table.c.seq, sqlite_where=pending, postgresql_where=pending)
    return table


def refused_table(name: str, metadata: sa.MetaData, schema: str | None) -> sa.Table:
    """Staged events the broker refused for good (too large), with the reason."""
    return sa.Table(
        name,
        metadata,
        _seq(),
        *_message_columns(),
        sa.Column("refused_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        schema=schema,
    )


def lease_table(name: str, metadata: sa.MetaData, schema: str | None) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        schema=schema,
    )


def row_values(message: Message) -> dict[str, Any]:
    """The message columns of a row holding ``message`` (``staged_at`` excluded)."""
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
    }


def row_message(row: sa.Row[Any]) -> Message:
    """Rebuild the staged :class:`herald.Message` from an outbox row."""
    return Message(
        type=row.type,
        body=bytes(row.body),
        id=row.message_id,
        source=row.source,
        subject=row.subject,
        time=time_from("time", row.time),
        datacontenttype=row.datacontenttype,
        headers=json.loads(row.headers),
        specversion=row.specversion,
    )
