"""Serving the dashboard: a bus, the telemetry collector and the web server, together."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from ..bus import connect
from ..errors import ConfigurationError
from ..signals import stop_on_signals
from ..webserver import WebServer
from .app import create_app
from .collector import Collector
from .controls import ServiceControls
from .guard import protect, requires_token
from .store import Store
from .views import Dashboard

__all__ = ["ASSETS", "DEFAULT_DB", "TOKEN_ENV", "check_assets", "serve_dashboard"]

DEFAULT_DB = "./var/dashboard.db"
TOKEN_ENV = "HERALD_DASHBOARD_TOKEN"
ASSETS = ("htmx.min.js", "sse.min.js", "uPlot.iife.min.js", "uPlot.min.css")
"""The browser libraries ``make install`` copies from ``.npm/`` into ``static/vendor``."""


def check_assets(folder: Path = Path(__file__).parent / "static" / "vendor") -> None:
    """Raise :class:`herald.ConfigurationError` naming what is missing from ``folder``."""
    missing = [name for name in ASSETS if not (folder / name).is_file()]
    if missing:
        raise ConfigurationError(
            f"the dashboard's browser libraries are missing from {folder} "
            f"({', '.join(missing)}): run make install (it needs Node.js and npm)"
        )


async def serve_dashboard(
    broker_url: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
    db_path: str | Path = DEFAULT_DB,
    controls: ServiceControls | None = None,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the dashboard of the broker at ``broker_url`` until ``stop`` is set (by
    default: until SIGINT/SIGTERM). ``on_ready`` gets the URL once it listens. Binding
    beyond loopback needs ``token`` (or ``$HERALD_DASHBOARD_TOKEN``)."""
    check_assets()
    token = token or os.environ.get(TOKEN_ENV) or None
    if requires_token(host) and not token:
        raise ConfigurationError(
            f"the dashboard on {host} would be reachable from other machines: "
            f"give --token or ${TOKEN_ENV}, or bind to 127.0.0.1"
        )
    store = Store(db_path)
    try:
        async with connect(broker_url, source="herald-dashboard") as bus:
            collector = Collector(bus, store)
            await collector.declare()
            app = protect(
                create_app(Dashboard(bus, store, collector, controls)),
                host=host,
                port=port,
                token=token,
            )
            server = WebServer.for_app(app, host, port)
            tasks = [asyncio.create_task(collector.run()), asyncio.create_task(server.serve())]
            try:
                ready = asyncio.create_task(server.ready.wait())
                await asyncio.wait([ready, tasks[1]], return_when=asyncio.FIRST_COMPLETED)
                if not ready.done():
                    ready.cancel()
                    tasks[1].result()
                    raise ConfigurationError(f"the dashboard could not listen on {host}:{port}")
                if on_ready is not None:
                    on_ready(f"http://{host}:{server.port}/")
                await _until_stopped(stop, tasks)
            finally:
                server.should_exit = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(tasks[1]), 5)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        store.close()


async def _until_stopped(stop: asyncio.Event | None, tasks: list[asyncio.Task[None]]) -> None:
    with contextlib.ExitStack() as stack:
        if stop is None:
            stop = stack.enter_context(stop_on_signals())
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper:
                    task.result()
                    raise RuntimeError("the dashboard stopped unexpectedly")
        finally:
            stopper.cancel()
