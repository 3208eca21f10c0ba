"""OpenTelemetry tracing across services: spans per the messaging semantic
conventions, and W3C trace context carried in every message.

Add :class:`TracingMiddleware` to a bus (``herald.connect(url,
middleware=[TracingMiddleware.for_url(url)])``) and configure the OpenTelemetry SDK
as usual. Each publish gets a ``send`` span and each message its creation context
in ``traceparent``/``tracestate`` headers (the CloudEvents distributed-tracing
extension), on every broker, through request/reply and through the transactional
outbox (:func:`stamp`, which :meth:`herald.outbox.Outbox.stage` applies). Each
delivery gets a ``process`` span linked to that context, and each settlement a
``settle`` span. Herald depends on the OpenTelemetry API only; without an SDK
nothing is recorded.

>>> import asyncio, herald
>>> from opentelemetry.sdk.trace import TracerProvider
>>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
>>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
>>> exporter = InMemorySpanExporter()
>>> provider = TracerProvider()
>>> provider.add_span_processor(SimpleSpanProcessor(exporter))
>>> class Hired(herald.Event, type="demo.hired"):
...     name: str
>>> svc = herald.Service("welcome")
>>> @svc.on(Hired)
... async def welcome(event: Hired) -> None:
...     pass
>>> tracing = TracingMiddleware(parent=True, tracer_provider=provider)
>>> async def main() -> None:
...     async with herald.connect("memory://tracing-doctest", middleware=[tracing]) as bus:
...         worker = await bus.start(svc)
...         await bus.publish(Hired(name="Ada"))
...         while worker.handled < 1:
...             await asyncio.sleep(0.01)
...         await worker.stop()
>>> asyncio.run(main())
>>> spans = {span.name: span for span in exporter.get_finished_spans()}
>>> sorted(spans)
['ack demo.hired', 'process demo.hired', 'send demo.hired']
>>> spans["process demo.hired"].parent.span_id == spans["send demo.hired"].context.span_id
True
>>> spans["process demo.hired"].attributes["messaging.consumer.group.name"]
'welcome'
"""

from __future__ import annotations

from .attributes import messaging_system
from .creation import stamp
from .middleware import TracingMiddleware, tracer_for
from .propagation import TRACEPARENT, TRACESTATE, creation_context, inject

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "TracingMiddleware",
    "creation_context",
    "inject",
    "messaging_system",
    "stamp",
    "tracer_for",
]
