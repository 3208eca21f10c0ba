"""The dashboard in a real browser, on the HR platform run by its supervisor (as
``herald demo`` runs it), on the embedded SQLite broker.

One browser, one platform, one story: giftcards started live from the dashboard; an
employee created in hr-web reaches payroll and giftcards on the flow view; payroll
stopped from the dashboard falls behind and catches up when started again.
Screenshots of each page go to docs/dashboard/ (shown in docs/dashboard.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Locator, Page, expect

import herald
from herald.telemetry import TelemetryMiddleware
from herald.testing import eventually

from ..browser import chromium_page
from ..hr.platform import free_port

DOCS = Path(__file__).resolve().parents[2] / "docs" / "dashboard"
READY = 60.0
WAIT = 30_000
"""Milliseconds an expectation waits: reports come every 2 s, dead letters are counted
every 5 s, and the machine may be busy."""


@dataclass
class Demo:
    """The platform under its supervisor, with the dashboard it hosts."""

    process: asyncio.subprocess.Process
    ports: dict[str, int]
    http: httpx.AsyncClient
    log: Path
    broker: str

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    async def publish_poison(self) -> str:
        """An ``employee.created`` without the employee: dead-lettered on arrival."""
        telemetry = TelemetryMiddleware(interval=60)
        async with herald.connect(self.broker, source="poisoner", middleware=[telemetry]) as bus:
            reporting = asyncio.create_task(telemetry.run(bus))
            message = await bus.publish(
                herald.Message(type="employee.created", body=b'{"guid": "poison"}')
            )
            reporting.cancel()  # sends what it has on the way out
            await asyncio.gather(reporting, return_exceptions=True)
        return message.id

    async def create(self, name: str) -> str:
        response = await self.http.post(
            self.url("hr-web", "/api/employees"),
            json={
                "first_name": name,
                "last_name": "Dashboard",
                "email": f"{name.lower()}.{uuid.uuid4().hex[:6]}@example.com",
                "salary": "50000",
            },
            headers={"Origin": self.url("hr-web")},  # as a browser sends it
        )
        assert response.status_code == 201, response.text
        guid: str = response.json()["guid"]
        return guid


@pytest.fixture
async def demo(workdir: Path) -> AsyncIterator[Demo]:
    ports = {name: free_port() for name in ("hr-web", "payroll", "giftcards", "dashboard")}
    log = workdir / "supervisor.log"
    argv = [sys.executable, "-m", "hr_platform", "platform", "--data-dir", str(workdir)]
    argv += ["--without", "giftcards"]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    broker = f"sqlite:///{workdir}/herald.db"
    env = {**os.environ, "HERALD_BROKER": broker}
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=out, env=env, cwd=workdir
        )
    demo = Demo(process, ports, httpx.AsyncClient(timeout=20), log, broker)

    async def ready() -> bool:
        assert process.returncode is None, log.read_text()
        with contextlib.suppress(httpx.HTTPError):
            for name, path in (("dashboard", "/"), ("hr-web", "/healthz"), ("payroll", "/healthz")):
                if (await demo.http.get(demo.url(name, path))).status_code != 200:
                    return False
            return True
        return False

    try:
        await eventually(ready, timeout=READY, what="the platform to be ready", interval=0.2)
        yield demo
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 40)
        await demo.http.aclose()
        print(log.read_text(errors="replace")[-3000:])


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with chromium_page(WAIT, viewport={"width": 1500, "height": 900}) as page:
        expect.set_options(timeout=WAIT)
        try:
            yield page
        finally:
            expect.set_options(timeout=5_000)  # Playwright's default, for other tests


async def reload_until(page: Page, locator: Locator, count: int) -> None:
    """Reload a page that is not live until ``locator`` finds ``count`` elements."""
    deadline = asyncio.get_running_loop().time() + 30
    while await locator.count() < count:
        assert asyncio.get_running_loop().time() < deadline, f"never {count} of {locator}"
        await asyncio.sleep(0.3)
        await page.reload()


async def test_the_dashboard_story(demo: Demo, page: Page) -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    await page.goto(demo.url("dashboard", "/"))
    controls = page.locator("#controls")
    await expect(controls.locator('tr[data-service="giftcards"] .process')).to_have_text("stopped")

    # giftcards joins live: started from the dashboard, its queue appears with a consumer
    await page.click("#start-giftcards")
    giftcards = page.locator('#queues tr[data-queue="giftcards.employee.created"]')
    await expect(giftcards.locator(".state")).to_have_text("running", timeout=40_000)

    # an employee created through hr-web's form reaches payroll and giftcards
    await page.goto(demo.url("hr-web", "/employees/new"))
    await page.fill("#first_name", "Grace")
    await page.fill("#last_name", "Hopper")
    await page.fill("#email", f"grace.{uuid.uuid4().hex[:6]}@example.com")
    await page.fill("#salary", "88000")
    await page.click("#save")
    await expect(page.locator("#notice")).to_have_text("Employee was created.")
    await page.goto(demo.url("dashboard", "/"))
    payroll = page.locator('#queues tr[data-queue^="payroll."]')
    await expect(payroll.locator(".handled")).to_have_text("1")
    await expect(giftcards.locator(".handled")).to_have_text("1")
    await expect(page.locator('#publishers li[data-service="employees"]')).to_contain_text(
        "employee.created"
    )
    await page.screenshot(path=DOCS / "flow.png", full_page=True)

    # payroll stopped from the dashboard: its queue grows, then drains once started
    await page.click("#stop-payroll")
    await expect(payroll.locator(".state")).to_have_text("stopped")
    for name in ("Ada", "Alan", "Barbara"):
        await demo.create(name)
    await expect(payroll.locator(".depth")).to_have_text("3")
    await expect(giftcards.locator(".handled")).to_have_text("4")
    await page.screenshot(path=DOCS / "flow-payroll-stopped.png", full_page=True)
    await page.click("#start-payroll")
    await expect(payroll.locator(".state")).to_have_text("running", timeout=40_000)
    await expect(payroll.locator(".depth")).to_have_text("0")
    await expect(payroll.locator(".handled")).to_have_text("4")

    # a poison message is dead-lettered by payroll and giftcards, grouped by failure
    poison = await demo.publish_poison()
    await page.goto(demo.url("dashboard", "/"))
    await expect(payroll.locator(".dead-letters")).to_have_text("1")
    await page.goto(demo.url("dashboard", "/dead-letters"))
    await reload_until(page, page.locator("#groups tr.group"), 2)
    payroll_group = page.locator('#groups tr.group[data-service="payroll"]')
    await expect(payroll_group.locator(".count")).to_have_text("1")
    await expect(payroll_group.locator(".shape")).to_contain_text("ValidationError")
    await page.screenshot(path=DOCS / "dead-letters.png", full_page=True)
    key = await payroll_group.get_attribute("data-group")
    await page.click(f'#groups tr.members[data-group="{key}"] a[data-id="{poison}"]')
    await expect(page.locator("#reason .attempts")).to_have_text("1")
    await expect(page.locator("#reason .queue")).to_have_text("payroll.employee")
    await expect(page.locator("#body")).to_contain_text('"guid": "poison"')
    await page.screenshot(path=DOCS / "dead-letter.png", full_page=True)

    # edited into a valid employee and replayed, payroll handles it
    fixed = {
        "guid": "poison",
        "first_name": "Mended",
        "last_name": "Message",
        "email": "mended@example.com",
        "salary": "1000",
    }
    await page.fill("#edit-body", json.dumps(fixed))
    await page.click("#edit-replay")
    await expect(page.locator("#replayed")).to_contain_text(f"Replayed {poison}")

    async def on_payroll() -> bool:
        got = await demo.http.get(demo.url("payroll", "/api/payroll/poison"))
        return got.status_code == 200

    await eventually(on_payroll, timeout=30, what="the mended employee on payroll")

    # its trail: published by the poisoner; payroll acked it (after the edit),
    # giftcards dead-lettered it
    await page.goto(demo.url("dashboard", f"/trail?q={poison}"))
    message = page.locator(f'section.message[data-id="{poison}"]')
    await reload_until(page, message.locator(".deliveries tr.acked"), 1)
    await expect(message.locator(".published-by")).to_contain_text("poisoner")
    await expect(message.locator('tr[data-queue^="giftcards."] .outcome')).to_contain_text(
        "dead-lettered"
    )
    payroll_rows = message.locator('tr[data-queue^="payroll."]')
    await expect(payroll_rows.locator(".outcome")).to_contain_text(["dead-lettered", "acked"])
    await expect(payroll_rows.locator(".attempt")).to_have_text(["1", "1"])  # a first attempt
    await page.screenshot(path=DOCS / "trail.png", full_page=True)

    # replaying giftcards' group puts it back on giftcards' queue, where it fails again
    await page.goto(demo.url("dashboard", "/dead-letters"))
    giftcards_group = page.locator('#groups tr.group[data-service="giftcards"]')
    await giftcards_group.locator(".replay-group").click()
    await expect(page.locator("#job .job-text")).to_have_text(re.compile("1 done"))

    # purged (once confirmed), the group leaves the list, which reloads by itself
    await reload_until(page, page.locator('#groups tr.group[data-service="giftcards"]'), 1)
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await giftcards_group.locator(".purge-group").click()
    await expect(page.locator("#job .job-text")).to_have_text(re.compile("purge of 1 .*1 done"))
    await expect(page.locator("#no-dead-letters")).to_be_visible()

    # the timeline shows the services' throughput and the dead letters
    await page.goto(demo.url("dashboard", "/timeline?window=5m"))
    await expect(page.locator("#timeline")).to_have_attribute(
        "data-services", re.compile("payroll")
    )
    await page.screenshot(path=DOCS / "timeline.png", full_page=True)
