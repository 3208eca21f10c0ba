"""A page in the system's Chromium (``/usr/bin/chromium``, Debian package ``chromium``,
or ``$HR_CHROMIUM``), driven by Playwright, which never downloads a browser here."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright

from .servers import unavailable

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


@contextlib.asynccontextmanager
async def chromium_page(timeout_ms: float, **options: Any) -> AsyncIterator[Page]:
    """A new page (``options`` as for ``Browser.new_page``) in a headless Chromium,
    closed afterwards. Without Chromium: a failure in CI, a skip elsewhere."""
    if not HAVE_CHROMIUM:
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page(**options)
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            await browser.close()
