"""The weekly top-up of gift cards, with the week shortened to half a second."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

import herald
from hr_platform.__main__ import _parser
from hr_platform.database import Database
from hr_platform.giftcards import (
    WEEK,
    WEEKLY_AMOUNT,
    NewEmployee,
    TopUp,
    _views,
    build_service,
    metadata,
    topup_period,
)

from .platform import eventually

PERIOD = timedelta(seconds=0.5)


async def test_two_replicas_top_up_every_card_once_per_period(workdir: Path) -> None:
    db = Database(f"sqlite:///{workdir}/giftcards.db", metadata)
    await db.create_tables()
    url = f"sqlite:///{workdir}/herald.db"
    topups: list[TopUp] = []

    async def topped_up_twice() -> bool:
        async with db.sessions() as session:
            topups[:] = await session.scalars(select(TopUp))
        slots = {guid: {t.slot for t in topups if t.employee_guid == guid} for guid in "ab"}
        return all(len(found) >= 2 for found in slots.values())

    try:
        async with herald.connect(url) as one, herald.connect(url) as two:
            workers = [await bus.start(build_service(db, PERIOD)) for bus in (one, two)]
            await one.publish_many(
                NewEmployee(guid=guid, first_name=guid.upper(), last_name="X") for guid in "ab"
            )
            await eventually(topped_up_twice, timeout=20, what="two top-ups per card")
            for worker in workers:
                await worker.stop()
            assert await one.dead_letters("giftcards") == [], "no top-up failed"
        views = await _views(db)
        async with db.sessions() as session:
            topups[:] = await session.scalars(select(TopUp))
    finally:
        await db.close()
    for guid in "ab":
        slots = [t.slot for t in topups if t.employee_guid == guid]
        assert len(slots) == len(set(slots)) >= 2, f"{guid}: one top-up per week: {slots}"
    assert {t.amount for t in topups} == {WEEKLY_AMOUNT}
    for view in views:
        assert view.balance == WEEKLY_AMOUNT * view.top_ups
        assert view.top_ups == sum(1 for t in topups if t.employee_guid == view.employee_guid)
    assert sum(view.balance for view in views) == WEEKLY_AMOUNT * len(topups) > Decimal(0)


def test_the_period_comes_from_the_option_else_the_environment_else_a_week(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GIFTCARDS_TOPUP_PERIOD", raising=False)
    assert topup_period() == WEEK
    monkeypatch.setenv("GIFTCARDS_TOPUP_PERIOD", "2")
    assert topup_period() == timedelta(seconds=2)
    assert topup_period(0.5) == timedelta(seconds=0.5)
    monkeypatch.setenv("GIFTCARDS_TOPUP_PERIOD", "weekly")
    with pytest.raises(ValueError, match="GIFTCARDS_TOPUP_PERIOD"):
        topup_period()
    assert _parser().parse_args(["giftcards", "--topup-period", "3"]).topup_period == 3.0
    with pytest.raises(SystemExit):
        _parser().parse_args(["giftcards", "--topup-period", "0"])
