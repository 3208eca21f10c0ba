"""The dashboard's app without a browser: an in-process broker, telemetry from a real
service, requests through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import herald
from herald.dashboard.app import create_app
from herald.dashboard.collector import Collector
from herald.dashboard.guard import protect
from herald.dashboard.store import Store
from herald.dashboard.views import Dashboard
from herald.telemetry import TelemetryMiddleware
from herald.testing import eventually


class Hired(herald.Event, type="staff.hired"):
    name: str


@dataclass
class Setup:
    bus: herald.Bus
    store: Store
    client: httpx.AsyncClient
    collector: Collector


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    url = f"memory://dashboard-{uuid.uuid4().hex[:8]}"
    store = Store(tmp_path / "dashboard.db")
    telemetry = TelemetryMiddleware(interval=0.05)
    service = herald.Service("payroll")

    @service.on(Hired, attempts=1)
    async def pay(event: Hired) -> None:
        if event.name == "poison":
            raise herald.Reject(f"no salary for {event.name}")

    async with (
        herald.connect(url, source="dashboard") as bus,
        herald.connect(url, source="hr", middleware=[telemetry]) as hr,
    ):
        collector = Collector(bus, store)
        await collector.declare()
        collecting = asyncio.create_task(collector.run())
        reporting = asyncio.create_task(telemetry.run(hr))
        worker = await hr.start(service)
        app = protect(
            create_app(Dashboard(bus, store, collector)), host="127.0.0.1", port=None, token=None
        )
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            await hr.publish(Hired(name="Ada"))
            await hr.publish(Hired(name="poison"))
            yield Setup(bus, store, client, collector)
        await worker.stop()
        for task in (collecting, reporting):
            task.cancel()
        await asyncio.gather(collecting, reporting, return_exceptions=True)
    store.close()


async def test_flow_shows_publisher_queue_and_counts(setup: Setup) -> None:
    async def handled_both() -> bool:
        page = (await setup.client.get("/")).text
        return '<td class="handled">2</td>' in page

    await eventually(handled_both, timeout=10, what="two deliveries on the flow page")
    page = (await setup.client.get("/")).text
    assert 'data-queue="payroll.staff.hired"' in page
    assert '<li data-service="hr">hr: staff.hired' in page
    assert setup.collector.queue not in page  # the dashboard's own queue is left out


async def test_dead_letters_grouped_and_edits_checked(setup: Setup) -> None:
    async def grouped() -> bool:
        return "Reject: no salary for poison" in (await setup.client.get("/dead-letters")).text

    await eventually(grouped, timeout=10, what="the dead letter's group")
    [letter] = await setup.bus.dead_letters("payroll")
    origin = {"Origin": "http://127.0.0.1"}
    response = await setup.client.post(
        f"/dead-letters/payroll/{letter.message.id}/edit",
        data={"body": '{"name": "Ada"}', "headers": "[1]"},
        headers=origin,
    )
    assert response.status_code == 422
    assert "form field 'headers'" in response.json()["detail"]
    response = await setup.client.get(f"/dead-letters/payroll/{letter.message.id}")
    assert "&#34;name&#34;: &#34;poison&#34;" in response.text  # pretty-printed, escaped


async def test_cross_site_actions_and_bad_input_are_refused(setup: Setup) -> None:
    async def dead_lettered() -> bool:
        return len(await setup.bus.dead_letters("payroll")) == 1

    await eventually(dead_lettered, timeout=10, what="the poison's dead letter")
    [letter] = await setup.bus.dead_letters("payroll")
    response = await setup.client.post(
        "/dead-letters/payroll/purge",
        data={"id": letter.message.id},
        headers={"Origin": "http://evil.example"},
    )
    assert response.status_code == 403
    await asyncio.sleep(0.1)
    assert len(await setup.bus.dead_letters("payroll")) == 1  # nothing was purged
    response = await setup.client.get("/timeline/stream", params={"window": "3d"})
    assert response.status_code == 422
    assert "window" in response.text
    response = await setup.client.post(
        "/services/payroll/stop", headers={"Origin": "http://127.0.0.1"}
    )
    assert response.status_code == 404  # no demo controls without herald demo


async def test_history_outlives_the_store(tmp_path: Path) -> None:
    from herald.telemetry.records import HandledCount, TelemetryReport  # noqa: PLC0415

    now = time.time()
    counted = HandledCount(queue="payroll.a", type="a", outcome="acked", count=2, buckets=[2])
    store = Store(tmp_path / "history.db")
    await store.add(
        TelemetryReport(service="payroll", started=now - 2, ended=now, handled=[counted])
    )
    store.close()
    reopened = Store(tmp_path / "history.db")
    try:
        assert await reopened.handled_counts(now - 60, now) == [("payroll", "payroll.a", "a", 2)]
    finally:
        reopened.close()


def test_binding_beyond_loopback_needs_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from herald.cli import main  # noqa: PLC0415

    monkeypatch.delenv("HERALD_DASHBOARD_TOKEN", raising=False)
    code = main(
        ["dashboard", "--broker", "memory://x", "--host", "0.0.0.0", "--db", str(tmp_path / "d.db")]
    )
    assert code == 2
    assert "give --token or $HERALD_DASHBOARD_TOKEN" in capsys.readouterr().err


async def test_token_and_host_are_checked(setup: Setup) -> None:
    guarded = protect(
        create_app(Dashboard(setup.bus, setup.store, setup.collector)),
        host="0.0.0.0",
        port=8080,
        token="s3cret",
    )
    transport = httpx.ASGITransport(guarded)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as client:
        assert (await client.get("/")).status_code == 401
        bearer = {"Authorization": "Bearer s3cret"}
        assert (await client.get("/", headers=bearer)).status_code == 200
        foreign = {**bearer, "Host": "evil.example:8080"}
        assert (await client.get("/", headers=foreign)).status_code == 400


def test_missing_browser_libraries_are_named(tmp_path: Path) -> None:
    from herald.dashboard.server import check_assets  # noqa: PLC0415

    (tmp_path / "htmx.min.js").write_text("")
    with pytest.raises(herald.ConfigurationError, match=r"sse\.min\.js.*run make install"):
        check_assets(tmp_path)
