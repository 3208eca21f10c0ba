"""One service process: a bus, the service's worker, a web server and background tasks,
all stopped in order on SIGINT/SIGTERM.

Stopping drains first: the worker takes no new deliveries and its running handlers
get ``shutdown_timeout`` seconds to finish, while the web server still answers, its
``/readyz`` saying 503 ``draining``; then the web server stops. Each phase prints a
line (``payroll: ready``, ``payroll: draining ...``, ``payroll: stopping``).

Uvicorn normally installs its own signal handlers and re-raises the signal when it
exits; here the process owns the signals, so the web server is told to exit and the
worker is stopped gracefully (running handlers finish, the rest is redelivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp

import herald
from herald.health import Health
from herald.metrics import MetricsMiddleware, QueueMonitor, exposed_registry
from herald.protobuf import with_protobuf
from herald.signals import stop_on_signals
from herald.telemetry import TelemetryMiddleware
from herald.webguard import WebGuard, local_hosts
from herald.webserver import WebServer

from .database import Database
from .proto import EmployeeMessage
from .telemetry import middleware

__all__ = [
    "SHUTDOWN_TIMEOUT",
    "Listener",
    "connect",
    "observe",
    "platform_codecs",
    "reporting",
    "run_consumer_service",
    "run_until_stopped",
]

log = logging.getLogger("hr_platform")
SHUTDOWN_TIMEOUT = 10.0
"""Seconds a service's running handlers get to finish once it is told to stop."""


def platform_codecs() -> herald.CodecRegistry:
    """JSON, plus protobuf ``EmployeeMessage`` for employee events from the Ruby platform."""
    return with_protobuf(
        messages={
            "employee.created": EmployeeMessage,
            "employee.updated": EmployeeMessage,
            "employee.deleted": EmployeeMessage,
        }
    )


def connect(broker: str, name: str) -> herald.Bus:
    """The bus of service ``name``, tracing its messaging, recording Prometheus metrics
    and reporting telemetry on the bus (for ``herald dashboard``; run :func:`reporting`)."""
    return herald.connect(
        broker,
        source=name,
        codecs=platform_codecs(),
        middleware=[*middleware(broker), MetricsMiddleware(), TelemetryMiddleware()],
    )


def reporting(bus: herald.Bus) -> list[Callable[[], Coroutine[Any, Any, None]]]:
    """The background tasks that publish the bus's telemetry reports."""
    return [
        functools.partial(item.run, bus)
        for item in bus.middleware
        if isinstance(item, TelemetryMiddleware)
    ]


def observe(app: FastAPI, bus: herald.Bus, services: Iterable[str] = ()) -> None:
    """Add ``/metrics`` (Prometheus) and ``/readyz`` (broker connected, every consumer of
    ``services`` running) to a service's web app; its ``/healthz`` says it is up."""
    health = Health(bus, services=tuple(services))
    registry = exposed_registry()

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:  # a plain def: rendered in a thread, off the event loop
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        probe = health.ready()
        return Response(probe.body(), status_code=probe.status, media_type="application/json")


@dataclass(frozen=True)
class Listener:
    """Where a service's web app listens, and who may reach it: the names it answers to
    (``host``, the loopback names, ``allowed_hosts``) and the token every request must
    carry, if any; other sites' pages are refused (:class:`herald.webguard.WebGuard`)."""

    host: str
    port: int
    token: str | None = None
    allowed_hosts: Sequence[str] = ()

    def guard(self, app: ASGIApp, json_paths: Sequence[str] = ()) -> WebGuard:
        return WebGuard(
            app,
            allowed_hosts=[*local_hosts(self.host, self.port), *self.allowed_hosts],
            token=self.token,
            json_paths=json_paths,
        )

    def server(self, app: ASGIApp) -> WebServer:
        return WebServer.for_app(app, self.host, self.port)

    def url(self, path: str = "") -> str:
        return f"http://{self.host}:{self.port}{path}"


async def run_until_stopped(
    name: str,
    tasks: Iterable[Callable[[], Coroutine[Any, Any, None]]],
    *,
    server: WebServer | None = None,
    worker: herald.Worker | None = None,
    url: str = "",
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
) -> None:
    """Run ``tasks`` and ``server`` until a signal arrives or one of them fails; then
    drain ``worker`` (running handlers get ``shutdown_timeout`` seconds), stop the server."""
    with stop_on_signals() as stop:
        await _run_until(
            name,
            stop,
            tasks,
            server=server,
            worker=worker,
            url=url,
            shutdown_timeout=shutdown_timeout,
        )


async def _run_until(
    name: str,
    stop: asyncio.Event,
    tasks: Iterable[Callable[[], Coroutine[Any, Any, None]]],
    *,
    server: WebServer | None,
    worker: herald.Worker | None,
    url: str,
    shutdown_timeout: float,
) -> None:
    running = [asyncio.create_task(task(), name=f"{name}:{i}") for i, task in enumerate(tasks)]
    serving = asyncio.create_task(server.serve()) if server is not None else None
    if worker is not None:
        running.append(asyncio.create_task(worker.wait(), name=f"{name}:worker"))
    stopper = asyncio.create_task(stop.wait())
    watched = [stopper, *running, *([serving] if serving else [])]
    try:
        if server is not None and serving is not None:
            ready = asyncio.create_task(server.ready.wait())
            await asyncio.wait((ready, serving), return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if serving.done():
                serving.result()
                raise RuntimeError(f"{name}: the web server did not start")
        print(f"{name}: ready{f' on {url}' if url else ''}", flush=True)
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper:
                task.result()
                raise RuntimeError(f"{task.get_name()} ended unexpectedly")
    finally:
        if worker is not None:
            # The web server keeps answering meanwhile: /readyz says "draining".
            print(f"{name}: draining (not ready; up to {shutdown_timeout:g}s)", flush=True)
            await worker.stop(shutdown_timeout)
        print(f"{name}: stopping", flush=True)
        if server is not None and serving is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, 10)
        for task in [stopper, *running]:
            task.cancel()
        await asyncio.gather(*running, stopper, return_exceptions=True)


async def run_consumer_service(
    name: str,
    broker: str,
    db: Database,
    service: herald.Service,
    app: FastAPI,
    listener: Listener,
    *,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
) -> None:
    """A service with its own database, one worker and a web page at ``/<name>``."""
    await db.create_tables()
    try:
        async with connect(broker, name) as bus:
            worker = await bus.start(service)
            observe(app, bus, [service.name])
            monitor = QueueMonitor(bus)
            await run_until_stopped(
                name,
                [monitor.run, *reporting(bus)],
                server=listener.server(listener.guard(app)),
                worker=worker,
                url=listener.url(f"/{name}"),
                shutdown_timeout=shutdown_timeout,
            )
    finally:
        await db.close()
