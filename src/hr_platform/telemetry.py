"""Tracing for the platform's processes.

Every process traces its messaging with :class:`herald.tracing.TracingMiddleware`
(``parent=True``: one trace follows a change from hr-web through employees and its
outbox to payroll and giftcards). With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (e.g.
``http://127.0.0.1:4318``, an OpenTelemetry Collector or Jaeger), spans are exported
there over OTLP/HTTP, each process as its own ``service.name``; the other
``OTEL_EXPORTER_OTLP_*`` variables apply as usual. Without it nothing is recorded,
but trace context still passes through.
"""

from __future__ import annotations

import logging
import os

from opentelemetry import trace

import herald
from herald.tracing import TracingMiddleware

__all__ = ["ENDPOINT", "install", "middleware", "tracer_provider"]

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
log = logging.getLogger("hr_platform.telemetry")


def tracer_provider(service: str) -> trace.TracerProvider | None:
    """An SDK provider exporting over OTLP/HTTP when ``$OTEL_EXPORTER_OTLP_ENDPOINT``
    is set, else None. Needs the ``hr`` extra (opentelemetry-sdk and the exporter)."""
    if not os.environ.get(ENDPOINT):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    except ImportError as exc:
        log.warning("%s is set but the OpenTelemetry SDK is missing (%s)", ENDPOINT, exc)
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def install(service: str) -> None:
    """Make the OTLP provider (if configured) the global one, and log where spans go."""
    provider = tracer_provider(service)
    if provider is not None:
        trace.set_tracer_provider(provider)
        log.info("exporting traces to %s as %s", os.environ[ENDPOINT], service)


def middleware(broker: str) -> list[herald.Middleware]:
    """The middleware every platform bus runs: tracing, on the global provider."""
    return [TracingMiddleware.for_url(broker, parent=True)]
