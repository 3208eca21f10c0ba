"""Each service's own database: SQLite files under ``./var/`` by default, or PostgreSQL.

URLs may name the plain dialect (``sqlite:///var/payroll.db``,
``postgresql://user:pw@host/db``); the asyncio driver (aiosqlite, asyncpg) is filled
in. SQLite runs in WAL mode and takes its write lock when a transaction begins
(``BEGIN IMMEDIATE``), so concurrent writers queue for the lock instead of failing
with "database is locked" halfway through; within a process they take turns through
:meth:`Database.writing`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, MetaData, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

__all__ = ["Database", "async_url", "default_db_url"]

LOCK_TIMEOUT = 30.0


def default_db_url(data_dir: str | Path, service: str) -> str:
    return f"sqlite+aiosqlite:///{Path(data_dir) / f'{service}.db'}"


def async_url(url: str) -> str:
    """``url`` with the asyncio driver of its dialect."""
    parsed = make_url(url)
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
    if parsed.drivername in driver:
        parsed = parsed.set(drivername=driver[parsed.drivername])
    return parsed.render_as_string(hide_password=False)


class Database:
    """An engine and a session factory for one service's tables."""

    def __init__(self, url: str, metadata: MetaData) -> None:
        self.url = async_url(url)
        self.metadata = metadata
        parsed = make_url(self.url)
        kwargs: dict[str, Any] = {}
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": LOCK_TIMEOUT}
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _immediate_transactions(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        """Hold around a write transaction: with SQLite, this process's writers take
        turns in arrival order instead of racing for the file lock (whose busy
        handler sleeps and retries, starving unlucky writers under load)."""
        if not self.is_sqlite:
            yield
            return
        async with self._write_lock:
            yield

    def __repr__(self) -> str:
        return f"Database({make_url(self.url)!r})"

    async def create_tables(self) -> None:
        """Create missing tables, and add the nullable columns a later release added to
        existing ones (older replicas, still running during a rolling deploy, leave
        them empty)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(self.metadata.create_all)
            await conn.run_sync(_add_new_columns, self.metadata)

    async def close(self) -> None:
        await self.engine.dispose()


def _add_new_columns(conn: Connection, metadata: MetaData) -> None:
    inspector = inspect(conn)
    preparer = conn.dialect.identifier_preparer
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present or not column.nullable:
                continue
            conn.exec_driver_sql(
                f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN "
                f"{preparer.format_column(column)} {column.type.compile(conn.dialect)}"
            )


def _immediate_transactions(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
