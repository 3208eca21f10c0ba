"""Backfill in the runtime: what a service asks for, and brokers that keep no history."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

import herald
from herald.capabilities import QueueInspection

from .examples import ROOT, python_blocks, run_example


class Hired(herald.Event, type="backfill.hired"):
    guid: str


def test_since_takes_only_an_aware_datetime() -> None:
    service = herald.Service("cards")
    with pytest.raises(herald.ConfigurationError, match="aware datetime"):
        service.on(Hired, since=datetime(2026, 1, 1))
    service.on(Hired, since=datetime(2026, 1, 1, tzinfo=UTC))(_ignore)
    (handler,) = service.handlers
    assert handler.backfill and handler.since == datetime(2026, 1, 1, tzinfo=UTC)


async def test_a_broker_without_history_refuses_at_start_naming_itself() -> None:
    service = herald.Service("cards")
    service.on("backfill.other")(_ignore)
    service.on(Hired, backfill=True)(_ignore)
    async with herald.connect(f"memory://backfill-{uuid.uuid4().hex[:8]}") as bus:
        with pytest.raises(herald.CapabilityError, match=r"cards\.backfill\.hired.*memory://"):
            await bus.start(service)
        assert isinstance(bus.broker, QueueInspection)
        assert await bus.broker.inspect_queues() == [], "nothing was declared"


async def _ignore(event: object) -> None:
    pass


DOC = ROOT / "docs" / "backfill.md"


@pytest.mark.parametrize("index", range(len(python_blocks(DOC))))
def test_docs_example_runs(index: int, tmp_path: Path) -> None:
    run_example(python_blocks(DOC)[index], tmp_path)
