"""Serving the metrics: a WSGI app for :class:`herald.health.ProbeServer` (what
``herald run --metrics-port`` uses) and an ASGI app to mount in a web service.

Both read :func:`exposed_registry`: the global registry, or in multi-process mode
(``PROMETHEUS_MULTIPROC_DIR`` set) a registry that adds up the files every process
of the service wrote there. In that mode, empty the directory before the processes
start, and call :func:`process_exited` (``herald run`` does) as a process ends.

>>> import asyncio
>>> from prometheus_client import CollectorRegistry, Counter
>>> registry = CollectorRegistry()
>>> Counter("herald_doctest", "A counter.", registry=registry).inc()
>>> async def scrape(app):
...     sent = []
...     async def receive():
...         return {"type": "http.request", "body": b"", "more_body": False}
...     async def send(event):
...         sent.append(event)
...     scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
...     await app(scope, receive, send)
...     return sent[1]["body"].decode()
>>> "herald_doctest_total 1.0" in asyncio.run(scrape(asgi_app(registry)))
True
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    make_asgi_app,
    make_wsgi_app,
    multiprocess,
)

from ..health.server import WSGIApp

__all__ = ["asgi_app", "exposed_registry", "metrics_routes", "multiprocess_dir", "process_exited"]


def multiprocess_dir() -> str | None:
    """``$PROMETHEUS_MULTIPROC_DIR``, if set."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposed_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """What a scrape should read: ``registry`` if given; else, in multi-process mode,
    a registry collecting every process's files; else the global registry."""
    if registry is not None:
        return registry
    if multiprocess_dir():
        collected = CollectorRegistry()
        multiprocess.MultiProcessCollector(collected)  # type: ignore[no-untyped-call]
        return collected
    return REGISTRY


def metrics_routes(registry: CollectorRegistry | None = None) -> dict[str, WSGIApp]:
    """``/metrics`` for :class:`herald.health.ProbeServer`."""
    app: WSGIApp = make_wsgi_app(exposed_registry(registry))
    return {"/metrics": app}


def asgi_app(registry: CollectorRegistry | None = None) -> Callable[..., Any]:
    """An ASGI app serving the metrics (``prometheus_client.make_asgi_app``); mount it
    at ``/metrics`` of a Starlette or FastAPI app."""
    return make_asgi_app(exposed_registry(registry))


def process_exited(pid: int | None = None) -> None:
    """In multi-process mode, drop the live gauges (in flight) of a process that
    ended (default: this one); counters and histograms keep counting its work."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(os.getpid() if pid is None else pid)  # type: ignore[no-untyped-call]
