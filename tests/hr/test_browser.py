"""In a real browser: hire someone through the form, then find them on the payroll page.

Uses the system Chromium (``/usr/bin/chromium``, Debian package ``chromium``);
Playwright never downloads a browser here.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from ..servers import unavailable
from .platform import Platform

CHROMIUM = Path(os.environ.get("HR_CHROMIUM", "/usr/bin/chromium"))
HAVE_CHROMIUM = CHROMIUM.exists()
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def browser_page() -> AsyncIterator[Page]:
    if not HAVE_CHROMIUM:
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(20_000)
            yield page
        finally:
            await browser.close()


async def test_hire_through_the_form_then_see_the_payroll_record(
    workdir: Path, browser_page: Page
) -> None:
    page = browser_page
    hr = Platform(f"sqlite:///{workdir}/herald.db", workdir)
    try:
        await hr.start("employees", "hr-web", "payroll")
        await page.goto(hr.url("hr-web", "/employees"))
        await page.click("#new-employee")

        await page.fill("#first_name", "Katherine")
        await page.fill("#last_name", "Johnson")
        await page.fill("#email", "not-an-email")
        await page.fill("#salary", "91000")
        await page.click("#save")
        await expect(page.locator("#email-error")).to_contain_text("not a valid email")
        await expect(page.locator("#first_name")).to_have_value("Katherine")

        await page.fill("#email", "katherine.johnson@example.com")
        await page.click("#save")
        await expect(page.locator("#notice")).to_have_text("Employee was created.")
        await expect(page.locator("#employee-name")).to_have_text("Katherine Johnson")
        guid = (await page.locator("#employee-guid").inner_text()).strip()

        await page.goto(hr.url("payroll", "/payroll"))
        row = page.locator(f'tr[data-guid="{guid}"]')
        deadline = time.monotonic() + 30
        while await row.count() == 0:
            assert time.monotonic() < deadline, "the payroll record never appeared"
            await page.reload()
        await expect(row).to_contain_text("Katherine Johnson")
        await expect(row).to_contain_text("91,000.00")
        await expect(row).to_contain_text("monthly")
    finally:
        await hr.close()
