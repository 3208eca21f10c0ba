"""The dashboard's web app: pages, their live fragments (server-sent events) and actions.

Pages render whole on ``GET``; each then keeps itself current through an SSE stream
of HTML fragments that htmx swaps in. Actions are ``POST`` forms sent by htmx.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from .deadletter_pages import dead_letter_routes
from .layout import layout
from .timeline import WINDOWS, build_timeline
from .trail import build_trail
from .views import Dashboard

__all__ = ["REFRESH", "create_app"]

Window = Literal["5m", "15m", "1h", "6h", "24h", "7d"]

HERE = Path(__file__).parent
REFRESH = 1.0
"""Seconds between two fragments of a live page."""


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "not reported"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _count(value: int | None) -> str:
    return "not reported" if value is None else str(value)


def create_app(dashboard: Dashboard) -> FastAPI:
    """The FastAPI app serving ``dashboard`` (put it behind
    :func:`herald.dashboard.guard.protect` to serve it)."""
    app = FastAPI(title="Herald dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["age"] = _age
    templates.env.filters["count"] = _count
    templates.env.filters["clock"] = _clock
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    async def flow_context() -> dict[str, Any]:
        view = await dashboard.flow()
        return {"view": view, "drawing": layout(view.flow), "url": dashboard.bus.url}

    @app.get("/", response_class=HTMLResponse)
    async def flow_page(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(
            request, "flow.html", {"page": "flow", **await flow_context()}
        )

    @app.get("/flow/stream", response_class=EventSourceResponse)
    async def flow_stream(request: Request) -> AsyncIterator[ServerSentEvent]:
        fragment = templates.get_template("_flow.html")
        while not await request.is_disconnected():
            html = fragment.render(await flow_context())
            yield ServerSentEvent(raw_data=html, event="flow")
            await asyncio.sleep(REFRESH)

    @app.post("/services/{name}/{action}", response_class=HTMLResponse)
    async def control(request: Request, name: str, action: str) -> HTMLResponse:
        controls = dashboard.controls
        if controls is None:
            raise HTTPException(404, "no demo controls: this dashboard runs without herald demo")
        if action not in ("start", "stop"):
            raise HTTPException(404, f"unknown action {action!r}: use start or stop")
        if name not in {state.name for state in controls.states()}:
            raise HTTPException(404, f"unknown service {name!r}")
        await (controls.start(name) if action == "start" else controls.stop(name))
        return templates.TemplateResponse(request, "_controls.html", {"states": controls.states()})

    @app.get("/timeline", response_class=HTMLResponse)
    async def timeline_page(request: Request, window: Window = "15m") -> HTMLResponse:
        return templates.TemplateResponse(
            request,
            "timeline.html",
            {"page": "timeline", "url": dashboard.bus.url, "windows": WINDOWS, "window": window},
        )

    @app.get("/timeline/stream", response_class=EventSourceResponse)
    async def timeline_stream(
        request: Request, window: Window = "15m"
    ) -> AsyncIterator[ServerSentEvent]:
        seconds = WINDOWS[window]
        while not await request.is_disconnected():
            now = time.time()
            data = build_timeline(
                await dashboard.store.handled_rows(now - seconds),
                await dashboard.store.published_rows(now - seconds),
                now=now,
                window=seconds,
            )
            yield ServerSentEvent(data=data, event="timeline")
            await asyncio.sleep(min(max(REFRESH * 2, seconds / 120), 15.0))

    @app.get("/trail", response_class=HTMLResponse)
    async def trail_page(
        request: Request, q: Annotated[str, Query(max_length=200)] = ""
    ) -> HTMLResponse:
        key = q.strip()
        messages = build_trail(await dashboard.store.trail(key)) if key else []
        return templates.TemplateResponse(
            request,
            "trail.html",
            {"page": "trail", "url": dashboard.bus.url, "q": key, "messages": messages},
        )

    app.include_router(dead_letter_routes(dashboard, templates))
    return app
