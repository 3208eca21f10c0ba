"""Telemetry on the bus: each process reports what it published and handled.

:class:`TelemetryMiddleware` counts, times and records deliveries and publishes;
its :meth:`~TelemetryMiddleware.run` publishes a
:class:`~herald.telemetry.records.TelemetryReport` every few seconds as an event of
type ``herald.telemetry.report``. ``herald dashboard`` subscribes to those reports
for its flow graph, timeline and message trail. Unlike Prometheus metrics this needs
no port per process and works on every broker.
"""

from .middleware import TelemetryMiddleware
from .records import REPORT_TYPE, Handling, Publishing, TelemetryReport, percentile

__all__ = [
    "REPORT_TYPE",
    "Handling",
    "Publishing",
    "TelemetryMiddleware",
    "TelemetryReport",
    "percentile",
]
