"""A traced service in its own process: ``python -m tests.tracing.child URL SPANS``.

It answers ``tracing.ping`` requests (RPC) and, while handling one, publishes a
``tracing.ponged`` event. Its spans go to the JSON-lines file SPANS; ``SPANS.ready``
appears once its queues are declared. SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pydantic
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import herald
from herald.tracing import TracingMiddleware

from .spans import FileSpanExporter

__all__ = ["Ping", "Pong", "Ponged", "main"]


class Ping(herald.Event, type="tracing.ping"):
    n: int


class Pong(pydantic.BaseModel):
    n: int


class Ponged(herald.Event, type="tracing.ponged"):
    n: int


async def serve(url: str, spans: Path) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(spans, "child")))
    service = herald.Service("tracee")

    @service.rpc(Ping)
    async def ping(request: Ping, ctx: herald.Context) -> Pong:
        await ctx.publish(Ponged(n=request.n))
        return Pong(n=request.n)

    tracing = TracingMiddleware.for_url(url, parent=True, tracer_provider=provider)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with herald.connect(url, source="tracee", middleware=[tracing]) as bus:
        worker = await bus.start(service)
        spans.with_suffix(".ready").write_text("ready")
        await stop.wait()
        await worker.stop(5.0)


def main(argv: list[str]) -> None:
    asyncio.run(serve(argv[0], Path(argv[1])))


if __name__ == "__main__":
    main(sys.argv[1:])
