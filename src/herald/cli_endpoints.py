"""``herald run --metrics-port`` and ``--health-port``: what the HTTP endpoints of a
running service are made of, and their lifetime around ``Bus.serve``.

The same port for both serves ``/metrics``, ``/healthz`` and ``/readyz`` from one
server. Metrics need ``herald[metrics]`` (prometheus-client); health needs nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from .bus import Bus
from .capabilities import QueueInspection
from .cli_common import UsageError
from .health import Health, ProbeServer, WSGIApp, health_routes, parse_address
from .middleware import Middleware

__all__ = ["endpoint_address", "metrics_middleware", "serving_endpoints"]

log = logging.getLogger("herald.cli")


def endpoint_address(text: str) -> tuple[str, int]:
    """``--metrics-port`` / ``--health-port``: ``PORT`` or ``HOST:PORT``."""
    try:
        return parse_address(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def metrics_middleware(enabled: bool) -> list[Middleware]:
    """The metrics middleware when ``enabled`` (else none)."""
    if not enabled:
        return []
    try:
        from .metrics import MetricsMiddleware  # noqa: PLC0415 (an optional extra)
    except ImportError as exc:
        raise UsageError(
            f"--metrics-port needs prometheus-client ({exc}); pip install 'herald[metrics]'"
        ) from None
    return [MetricsMiddleware()]


@contextlib.asynccontextmanager
async def serving_endpoints(
    bus: Bus,
    services: Sequence[str],
    *,
    metrics: tuple[str, int] | None,
    health: tuple[str, int] | None,
) -> AsyncIterator[list[ProbeServer]]:
    """Serve the endpoints asked for while the block runs (and queue gauges with
    the metrics, when the broker can inspect queues)."""
    wanted: dict[tuple[str, int], dict[str, WSGIApp]] = {}
    if health is not None:
        wanted.setdefault(health, {}).update(health_routes(Health(bus, services=services)))
    monitor = None
    if metrics is not None:
        from .metrics import QueueMonitor, metrics_routes, process_exited  # noqa: PLC0415

        wanted.setdefault(metrics, {}).update(metrics_routes())
        if isinstance(bus.broker, QueueInspection):
            monitor = QueueMonitor(bus)
    servers = [ProbeServer(routes, host=host, port=port) for (host, port), routes in wanted.items()]
    try:
        for server in servers:
            try:
                server.start()
            except OSError as exc:
                raise UsageError(
                    f"cannot serve {', '.join(sorted(server.routes))} on "
                    f"{server.host}:{server.port}: {exc.strerror or exc}"
                ) from exc
            log.info(
                "serving %s on %s:%d", ", ".join(sorted(server.routes)), server.host, server.port
            )
        if monitor is not None:
            monitor.start()
        yield servers
    finally:
        if monitor is not None:
            await monitor.stop()
        for server in servers:
            server.close()
        if metrics is not None:
            process_exited()
