"""In a real browser: hire someone through the form, then find them on the payroll page.

Uses the system Chromium (see ``tests/browser.py``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from ..browser import chromium_page
from .platform import Platform


@pytest.fixture
async def browser_page() -> AsyncIterator[Page]:
    async with chromium_page(20_000) as page:
        yield page


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
