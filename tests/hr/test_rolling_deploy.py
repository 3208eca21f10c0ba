"""A rolling deploy of payroll while employees are being created (through the
employees service's RPC, as hr-web creates them, ten a second at most): two replicas
of release 1 are replaced one at a time by release 2 (start the new one, wait until
its ``/readyz`` says 200, SIGTERM the old one, wait for it to exit).

Nothing is lost or done twice, later employees are handled by release 2, and no
event waits, and processing never pauses, longer than the shutdown deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import herald
from hr_platform.events import CreateEmployee, EmployeeRecord

from .platform import Platform, eventually

DEADLINE = 5.0
"""``--shutdown-timeout`` of every payroll replica, and the bound on gaps and waits."""
INTERVAL = 0.1
"""Seconds between two creates (one at a time)."""
AFTER = 15
"""Employees created once both old replicas are gone."""


@dataclass(frozen=True)
class Handling:
    guid: str
    change: str
    at: float
    release: str | None


def handlings(hr: Platform) -> list[Handling]:
    """Payroll's history, read from the database its replicas share."""
    with sqlite3.connect(hr.workdir / "payroll.db") as db:
        rows = db.execute(
            "SELECT employee_guid, change, at, release FROM payroll_history ORDER BY at"
        ).fetchall()
    return [
        Handling(guid, change, datetime.fromisoformat(at).replace(tzinfo=UTC).timestamp(), release)
        for guid, change, at, release in rows
    ]


def replica(release: str) -> tuple[str, ...]:
    return ("--release", release, "--shutdown-timeout", str(DEADLINE))


async def test_payroll_replicas_are_replaced_one_at_a_time(platform: Platform) -> None:
    hr = platform
    await hr.spawn("employees")
    for old in ("payroll-1", "payroll-2"):
        await hr.spawn(old, "payroll", *replica("1"))
    await hr.wait_ready("employees", "/readyz")
    for old in ("payroll-1", "payroll-2"):
        await hr.wait_ready(old, "/readyz")

    created: dict[str, float] = {}  # guid -> when its create was sent
    replaced: list[float] = []  # when the last old replica had exited

    async def keep_creating(bus: herald.Bus) -> None:
        i = 0
        while not replaced or sum(t > replaced[0] for t in created.values()) < AFTER:
            sent = time.time()
            hire = CreateEmployee(first_name="F", last_name=f"L{i}", email=f"{i}@a.io", salary="1")
            created[(await bus.request(hire, EmployeeRecord)).guid] = sent
            i += 1
            await asyncio.sleep(max(0.0, sent + INTERVAL - time.time()))

    exits = {}
    phases: list[tuple[str, float]] = []  # printed with the pauses, for a failure's report
    async with herald.connect(hr.broker) as bus:
        creating = asyncio.create_task(keep_creating(bus))
        await eventually(lambda: len(created) >= 10, 30, "creates under way", interval=0.1)
        for old, new in (("payroll-1", "payroll-3"), ("payroll-2", "payroll-4")):
            await hr.spawn(new, "payroll", *replica("2"))
            await hr.wait_ready(new, "/readyz")
            phases.append((f"{new} ready, {old} stopping", time.time()))
            exits[old] = await hr.stop(old)
            phases.append((f"{old} exited", time.time()))
        replaced.append(time.time())
        await asyncio.wait_for(creating, 60)

    async def all_handled() -> bool:
        return len(await asyncio.to_thread(handlings, hr)) >= len(created)

    await eventually(all_handled, 30, f"{len(created)} payroll changes", interval=0.25)
    await asyncio.sleep(0.5)  # a duplicate effect would show up by now
    history = await asyncio.to_thread(handlings, hr)

    assert exits == {"payroll-1": 0, "payroll-2": 0}, "each old replica drained and exited cleanly"
    for old in exits:
        assert "payroll: draining (not ready" in hr.log(old)
    assert Counter(h.guid for h in history) == Counter(set(created)), "each exactly once"
    assert {h.change for h in history} == {"opened"}
    records = (await hr.http.get(hr.url("payroll-4", "/api/payroll"))).json()
    assert sorted(r["employee_guid"] for r in records) == sorted(created)
    assert {r["changes"] for r in records} == {1}

    releases = {h.guid: h.release for h in history}
    late = [guid for guid, sent in created.items() if sent > replaced[0]]
    assert len(late) >= AFTER and {releases[guid] for guid in late} == {"2"}
    assert set(releases.values()) == {"1", "2"}, "both releases took part"

    start = min(created.values())
    for what, at in phases:
        print(f"{at - start:6.2f}s {what}")
    times = [h.at for h in history]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for (earlier, later), gap in zip(itertools.pairwise(times), gaps, strict=True):
        if gap > DEADLINE / 2:
            print(f"{earlier - start:6.2f}s to {later - start:.2f}s: nothing handled")
    waits = [h.at - created[h.guid] for h in history]
    print(
        f"{len(created)} employees; longest gap between handlings {max(gaps):.2f}s, "
        f"longest wait {max(waits):.2f}s (deadline {DEADLINE:g}s)"
    )
    assert max(gaps) < DEADLINE, "processing paused longer than the shutdown deadline"
    assert max(waits) < DEADLINE, "an event waited longer than the shutdown deadline"
