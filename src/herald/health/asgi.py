"""The probes as an ASGI app, to mount in a web service of one's own.

It answers a path ending in ``/healthz`` with :meth:`Health.live` and one ending in
``/readyz`` with :meth:`Health.ready`, anything else with 404; mounted at ``/probes``
of a Starlette or FastAPI app, it serves ``/probes/healthz`` and ``/probes/readyz``.

>>> import asyncio, herald
>>> from herald.health import Health, asgi_app
>>> async def get(app, path):  # what an ASGI server does, reduced
...     sent = []
...     async def receive():
...         return {"type": "http.request", "body": b"", "more_body": False}
...     async def send(event):
...         sent.append(event)
...     await app({"type": "http", "method": "GET", "path": path}, receive, send)
...     return sent[0]["status"], sent[1]["body"]
>>> async def main():
...     async with herald.connect("memory://health-asgi-doctest") as bus:
...         app = asgi_app(Health(bus))
...         return await get(app, "/probes/healthz"), await get(app, "/nope")
>>> asyncio.run(main())
((200, b'{"checks": {"process": "ok"}, "status": "ok"}'), (404, b'not found'))
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .probe import Health, Probe

__all__ = ["ASGIApp", "asgi_app"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def asgi_app(health: Health) -> ASGIApp:
    """An ASGI app serving ``…/healthz`` and ``…/readyz`` of ``health``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope.get("path", "")
        probe: Probe | None = None
        if path.endswith("/healthz"):
            probe = health.live()
        elif path.endswith("/readyz"):
            probe = health.ready()
        if probe is None:
            status, body, kind = 404, b"not found", b"text/plain; charset=utf-8"
        else:
            status, body, kind = probe.status, probe.body(), b"application/json"
        headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app
