"""Outbox backlog and relay lag, read from the outbox table (needs ``herald[sql]``).

>>> import asyncio, herald
>>> from prometheus_client import CollectorRegistry
>>> from sqlalchemy.ext.asyncio import create_async_engine
>>> from herald.outbox import Outbox
>>> registry = CollectorRegistry()
>>> async def main() -> None:
...     engine = create_async_engine("sqlite+aiosqlite://")
...     outbox = Outbox()
...     await outbox.create(engine)
...     async with engine.begin() as conn:
...         await outbox.stage(conn, herald.Message(type="thing.happened", body=b"{}"))
...     await OutboxMonitor(engine, outbox, registry=registry).refresh()
...     await engine.dispose()
>>> asyncio.run(main())
>>> registry.get_sample_value("herald_outbox_backlog", {"outbox": "herald_outbox"})
1.0
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from ..outbox import Outbox
from .monitor import Monitor

__all__ = ["OutboxMonitor"]


class OutboxMonitor(Monitor):
    """``herald_outbox_backlog`` (rows staged, not yet published) and
    ``herald_outbox_lag_seconds`` (how long the oldest of them has waited) of one
    outbox, read every ``interval`` seconds. A growing lag means no relay is
    publishing (none runs, or the broker refuses)."""

    def __init__(
        self,
        engine: AsyncEngine,
        outbox: Outbox,
        *,
        interval: float = 15.0,
        timeout: float = 5.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(interval=interval, timeout=timeout, registry=registry)
        self.engine = engine
        self.outbox = outbox

    def __repr__(self) -> str:
        return f"OutboxMonitor({self.outbox.name!r})"

    async def _read(self) -> None:
        t = self.outbox.table
        query = sa.select(sa.func.count(), sa.func.min(t.c.staged_at)).where(t.c.sent_at.is_(None))
        async with self.engine.connect() as conn:
            count, oldest = (await conn.execute(query)).one()
        lag = 0.0
        if oldest is not None:
            if oldest.tzinfo is None:  # SQLite hands back naive UTC
                oldest = oldest.replace(tzinfo=UTC)
            lag = max(0.0, (datetime.now(UTC) - oldest).total_seconds())
        m = self.instruments
        m.outbox_backlog.labels(self.outbox.name).set(count)
        m.outbox_lag.labels(self.outbox.name).set(lag)
