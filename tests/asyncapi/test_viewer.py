"""``herald docs serve`` in a real browser: the AsyncAPI React component renders the
HR platform's channels and operations from files served locally, with no other
request leaving the page.

Uses the system Chromium (``/usr/bin/chromium``); Playwright never downloads a browser.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from playwright.async_api import Locator, async_playwright, expect

from herald.asyncapi.viewer import find_assets

from ..servers import unavailable

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("HR_CHROMIUM", "/usr/bin/chromium"))
HAVE_CHROMIUM = CHROMIUM.exists()
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
TIMEOUT = 60.0


class Viewer:
    """A running ``herald docs serve`` of the HR platform on a free port."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "herald",
                "docs",
                "serve",
                "hr_platform.catalog:services",
                "--codecs",
                "hr_platform.process:platform_codecs",
                "--broker",
                "amqp://guest:s3cret@rabbit.internal:5672/",
                "--port",
                "0",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put("")

    def url(self) -> str:
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            assert line, f"herald docs serve exited {self.proc.wait()} before serving"
            found = re.search(r"viewer on (http://\S+)", line)
            if found:
                return found[1]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


async def test_the_viewer_shows_the_hr_platform() -> None:
    if not HAVE_CHROMIUM:
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        find_assets()
    except Exception as exc:
        unavailable(str(exc))
    viewer = Viewer()
    try:
        url = viewer.url()
        assert url.startswith("http://127.0.0.1:")  # local only, unless --host says otherwise
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = await browser.new_page()
                page.set_default_timeout(30_000)

                def visible(text: str, *, exact: bool = False) -> Locator:
                    return page.get_by_text(text, exact=exact).filter(visible=True).first

                requested: list[str] = []
                page.on("request", lambda request: requested.append(request.url))
                await page.goto(url)
                await expect(
                    visible("Herald services: employees, payroll, giftcards")
                ).to_be_visible()
                for heading in (
                    "SEND employee.created",
                    "SEND employee.deleted",
                    "RECEIVE payroll.employee",
                    "RECEIVE giftcards.employee.created",
                    "REPLY employees.rpc.employees.get",
                    "REPLY employees.rpc.employees.create",
                ):
                    await expect(visible(heading, exact=True)).to_be_visible()
                await expect(visible("rabbit.internal:5672")).to_be_visible()
                body = await page.inner_text("body")
                assert "s3cret" not in body
                assert "NewEmployee" in body
                assert requested, "the page requested nothing"
                assert all(r.startswith(url) for r in requested), requested
            finally:
                await browser.close()
    finally:
        assert viewer.stop() == 0
