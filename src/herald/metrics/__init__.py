"""Prometheus metrics of Herald services (needs ``herald[metrics]``, i.e.
``prometheus-client``).

- :class:`MetricsMiddleware` counts and times deliveries (by service, queue, handler
  and outcome), publishes (by event type and outcome) and RPC calls; the in-flight
  gauge, retries and dead letters (by error type) come with it.
- :class:`QueueMonitor` reads queue depth, in flight, consumers and the age of the
  oldest message from the broker every few seconds;
  :class:`~herald.metrics.outbox.OutboxMonitor` reads outbox backlog and relay lag.
- :func:`asgi_app` serves them from a web service of one's own;
  ``herald run --metrics-port N`` serves ``/metrics`` by itself.
- Multi-process services set ``PROMETHEUS_MULTIPROC_DIR`` (see
  :mod:`herald.metrics.exposition`).

The names of every metric are in :mod:`herald.metrics.instruments` and
``docs/observability.md``.
"""

from .exposition import asgi_app, exposed_registry, metrics_routes, process_exited
from .instruments import Instruments, instruments_for
from .middleware import MetricsMiddleware
from .monitor import Monitor, QueueMonitor

__all__ = [
    "Instruments",
    "MetricsMiddleware",
    "Monitor",
    "QueueMonitor",
    "asgi_app",
    "exposed_registry",
    "instruments_for",
    "metrics_routes",
    "process_exited",
]
