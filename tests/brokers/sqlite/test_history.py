"""The SQLite broker's retained history: ``retain=``, backfill, pruning."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from herald.brokers.sqlite import SQLiteSettings
from herald.capabilities import RetainedHistory
from herald.errors import BrokerURLError, CapabilityError
from herald.testing import eventually

from .helpers import SUB, connected, messages, take


def _retained(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute("SELECT count(*) FROM herald_history").fetchone()
    return int(count)


def test_retain_takes_a_duration() -> None:
    assert SQLiteSettings.from_url("sqlite:///h.db?retain=12h").retain == 43_200
    assert SQLiteSettings.from_url("sqlite:///h.db?retain=90").retain == 90
    assert SQLiteSettings.from_url("sqlite:///h.db").retain is None, "the file's"
    with pytest.raises(BrokerURLError, match=r"'retain'.*not a duration"):
        SQLiteSettings.from_url("sqlite:///h.db?retain=7w")


async def test_retention_is_the_files_and_backfill_without_it_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with connected(path) as broker:
        assert isinstance(broker, RetainedHistory)
        with pytest.raises(CapabilityError, match=r"\?retain="):
            await broker.backfill(SUB)
        async with connected(path, retain="1h"):
            await broker.publish(messages(2))  # this URL has no retain=, the file has
            await broker.publish(messages(1, "rpc.get.employee"))  # requests are not kept
        assert _retained(path) == 2
        async with connected(path, retain=0):
            await broker.publish(messages(1))
        assert _retained(path) == 2, "retain=0 turned it off"


async def test_replicas_backfilling_at_once_create_the_queue_with_history_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.db"
    async with connected(path, retain="1h") as one, connected(path, retain="1h") as two:
        await one.publish(messages(5))
        await one.publish(messages(2, "other.type"))  # in the history, not for the queue
        one.history_step = two.history_step = 2  # several transactions, shared
        counts = await asyncio.gather(one.backfill(SUB), two.backfill(SUB))
        await one.publish(messages(1, "invoice.paid"))
        assert sum(counts) == 5, f"the two share the copying, each row once: {counts}"
        assert await one.backfill(SUB) == 0, "a restart replays nothing"
        with sqlite3.connect(path) as conn:
            (queued,) = conn.execute("SELECT count(*) FROM herald_deliveries").fetchone()
        assert queued == 6, "5 retained, then 1 live, each once"
        taken = await take(one, 6, sub=SUB)
        assert [d.message.type for d in taken] == ["invoice.created"] * 5 + ["invoice.paid"]
        assert [d.message.body for d in taken[:5]] == [m.body for m in messages(5)], "in order"


async def test_since_and_pruning(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with connected(path, retain=1) as broker:
        await broker.publish(messages(2))
        since = datetime.now(UTC)
        await broker.publish(messages(3))
        assert await broker.backfill(SUB, since) == 3
        assert _retained(path) == 5
        with sqlite3.connect(path, timeout=5) as conn:
            conn.execute("UPDATE herald_history SET stored = stored - 2")  # as if 2 s passed
        await eventually(lambda: _retained(path) == 0, 5.0, "history older than retain pruned")
