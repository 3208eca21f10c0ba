"""``giftcards --backfill``: a card for every existing employee, once, then live.

Each event is handled once (the process's handled count, not only the cards, which
the inbox would keep unique anyway). That a restart replays nothing is the
conformance scenario's (tests/brokers/test_conformance.py) and the SQLite broker's
(tests/brokers/sqlite/test_history.py) to show; here it would cost two more process
starts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .platform import Platform, eventually
from .test_scenarios import create_many, wait_records


async def test_giftcards_backfill_gives_every_existing_employee_one_card(workdir: Path) -> None:
    hr = Platform(f"sqlite:///{workdir}/herald.db?retain=7d", workdir)
    try:
        await hr.start("employees", "hr-web")
        before, _ = await create_many(hr, 8, "before")
        await hr.start("giftcards", args=["--backfill"])
        after, _ = await create_many(hr, 4, "after")
        await wait_records(hr, "giftcards", {*before, *after}, 60)
        await eventually(lambda: _handled(hr, 12), 10, "12 deliveries handled")

        cards = Counter(card["employee_guid"] for card in await hr.records("giftcards"))
        assert set(cards) == {*before, *after} and set(cards.values()) == {1}
    finally:
        await hr.close()
        for name in hr.processes:
            print(f"----- {name} log (tail) -----\n{hr.log(name)}")


async def _handled(hr: Platform, expected: int) -> bool:
    handled = await hr.handled("giftcards", "giftcards.employee.created")  # not the top-ups
    assert handled <= expected, f"handled {handled} employee.created, expected {expected}"
    return handled == expected
