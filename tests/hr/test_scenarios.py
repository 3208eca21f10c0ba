"""The platform's story, end to end: real processes on real brokers.

Each scenario runs on the embedded SQLite broker, RabbitMQ, SQS (moto) and Kafka (Tansu).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter

from .platform import Platform, eventually


async def create_many(
    hr: Platform, count: int, prefix: str, concurrency: int = 8
) -> tuple[list[str], list[float]]:
    """Create ``count`` employees through hr-web; their guids and each call's latency."""
    slots = asyncio.Semaphore(concurrency)
    guids: list[str] = []
    latencies: list[float] = []

    async def one(i: int) -> None:
        async with slots:
            started = time.perf_counter()
            response = await hr.create(i, prefix)
            latencies.append(time.perf_counter() - started)
        assert response.status_code == 201, response.text
        guids.append(response.json()["guid"])

    await asyncio.gather(*(one(i) for i in range(count)))
    return guids, latencies


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


async def wait_records(hr: Platform, service: str, guids: set[str], timeout: float) -> None:
    async def arrived() -> bool:
        return guids <= {r["employee_guid"] for r in await hr.records(service)}

    await eventually(
        arrived, timeout=timeout, what=f"{len(guids)} {service} records", interval=0.25
    )


async def test_creates_do_not_wait_for_an_offline_payroll(platform: Platform) -> None:
    hr = platform
    await hr.start("employees", "hr-web", "payroll")
    up_guids, up_latency = await create_many(hr, 40, "up")
    await wait_records(hr, "payroll", set(up_guids), 30)

    assert await hr.stop("payroll") == 0
    down_guids, down_latency = await create_many(hr, 200, "down")
    assert not hr.running("payroll")

    await hr.start("payroll")
    await wait_records(hr, "payroll", set(up_guids) | set(down_guids), 60)
    records = await hr.records("payroll")
    assert len(records) == 240
    assert all(r["changes"] == 1 and r["status"] == "open" for r in records)
    print(f"create p95: payroll up {p95(up_latency):.3f}s, down {p95(down_latency):.3f}s")


async def test_giftcards_joins_a_running_platform(platform: Platform) -> None:
    hr = platform
    await hr.start("employees", "hr-web", "payroll")
    pids = {name: hr.pid(name) for name in ("employees", "hr-web", "payroll")}
    created: list[tuple[float, str]] = []
    stop_after: list[float] = []

    async def keep_creating() -> None:
        i = 0
        while not stop_after or len([t for t, _ in created if t > stop_after[0]]) < 60:
            started = time.monotonic()
            response = await hr.create(i, "live")
            assert response.status_code == 201, response.text
            created.append((started, response.json()["guid"]))
            i += 1

    creator = asyncio.create_task(keep_creating())
    await eventually(
        lambda: _at_least(created, 20), timeout=30, what="creates before giftcards", interval=0.25
    )
    # Everything created so far was published (payroll has it) before giftcards existed.
    before = {guid for _, guid in created[:20]}
    await wait_records(hr, "payroll", before, 60)
    await hr.start("giftcards")
    stop_after.append(time.monotonic())
    await asyncio.wait_for(creator, 120)

    after = {guid for started, guid in created if started > stop_after[0]}
    assert len(after) >= 60
    await wait_records(hr, "giftcards", after, 60)
    cards = Counter(card["employee_guid"] for card in await hr.records("giftcards"))
    assert all(cards[guid] == 1 for guid in after)
    assert max(cards.values()) == 1
    assert not before & set(cards), "no card for employees published before giftcards joined"

    await wait_records(hr, "payroll", {guid for _, guid in created}, 60)
    assert all(r["changes"] == 1 for r in await hr.records("payroll"))
    for name, pid in pids.items():
        assert hr.running(name) and hr.pid(name) == pid, f"{name} was restarted"


async def _at_least(items: list[tuple[float, str]], n: int) -> bool:
    return len(items) >= n


async def test_payroll_killed_mid_burst_handles_each_event_once(platform: Platform) -> None:
    hr = platform
    await hr.start("employees", "hr-web", "payroll")
    started = time.monotonic()
    burst = asyncio.create_task(create_many(hr, 1000, "burst", concurrency=8))

    async def payroll_busy() -> bool:
        return await hr.count("payroll") >= 100

    await eventually(payroll_busy, timeout=60, what="payroll to handle 100 events", interval=0.25)
    assert await hr.kill("payroll") == -9
    assert not burst.done(), "the burst ended before payroll was killed"
    guids, _ = await asyncio.wait_for(burst, 180)
    print(f"burst of 1000 creates took {time.monotonic() - started:.1f}s")

    restarted = time.monotonic()
    await hr.start("payroll")
    await wait_records(hr, "payroll", set(guids), 90)
    print(f"payroll caught up {time.monotonic() - restarted:.1f}s after its restart")
    records = await hr.records("payroll")
    assert len(records) == 1000
    assert len({r["employee_guid"] for r in records}) == 1000
    duplicates = [r for r in records if r["changes"] != 1]
    assert not duplicates, f"{len(duplicates)} records changed more than once"


async def test_employee_changes_reach_payroll_in_order(platform: Platform) -> None:
    hr = platform
    await hr.start("employees", "hr-web", "payroll")
    response = await hr.create(1, "order")
    guid = response.json()["guid"]
    for salary in range(50001, 50011):
        patched = await hr.http.patch(
            hr.url("hr-web", f"/api/employees/{guid}"), json={"salary": str(salary)}
        )
        assert patched.status_code == 200, patched.text
    deleted = await hr.http.delete(hr.url("hr-web", f"/api/employees/{guid}"))
    assert deleted.status_code == 200

    async def closed() -> bool:
        got = await hr.http.get(hr.url("payroll", f"/api/payroll/{guid}"))
        return got.status_code == 200 and got.json()["status"] == "closed"

    await eventually(closed, timeout=30, what="the payroll record to close", interval=0.25)
    record = (await hr.http.get(hr.url("payroll", f"/api/payroll/{guid}"))).json()
    assert record["yearly_salary"] == "50010.00"
    assert record["changes"] == 12
    gone = await hr.http.get(hr.url("hr-web", f"/api/employees/{guid}"))
    assert gone.status_code == 404
