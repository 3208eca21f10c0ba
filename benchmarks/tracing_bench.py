"""What tracing costs on ``memory://``: events/s through a service, off against on.

``python -m benchmarks.tracing_bench [--events N] [--rounds R]`` publishes N events
in batches of 500 and handles them in one service (concurrency 16), four ways per
round, interleaved (off, api, sdk, sdk-nosettle, off, ...) in one process:

- ``off``: no tracing middleware;
- ``api``: :class:`herald.tracing.TracingMiddleware` without an SDK (the API's
  no-op tracer: what a library user pays before configuring OpenTelemetry);
- ``sdk``: the middleware on an SDK ``TracerProvider`` whose batch processor hands
  every span (process and ack per event, send per batch) to an exporter that drops
  them;
- ``sdk-nosettle``: the same with ``settle=False`` (no ack spans).

It prints each way's median throughput (events/s, wall clock) and its ratio to
``off``, and the median CPU time per event (all of the process's threads, the SDK's
export thread included): on a shared machine the CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider

import herald
from herald.tracing import TracingMiddleware

__all__ = ["MODES", "main", "one_round"]

MODES = ("off", "api", "sdk", "sdk-nosettle")


class Tick(herald.Event, type="bench.tick"):
    n: int


class Round(NamedTuple):
    rate: float
    """Events/s, wall clock."""
    cpu: float
    """CPU microseconds per event."""


class Dropping(SpanExporter):
    """Counts spans and keeps none."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def _middleware(mode: str) -> tuple[list[herald.Middleware], TracerProvider | None]:
    if mode == "off":
        return [], None
    if mode == "api":
        return [TracingMiddleware(tracer_provider=NoOpTracerProvider())], None
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping(), max_queue_size=65536))
    settle = mode != "sdk-nosettle"
    return [TracingMiddleware(settle=settle, tracer_provider=provider)], provider


async def one_round(events: int, mode: str) -> Round:
    """One run, traced as ``mode`` says."""
    middleware, provider = _middleware(mode)
    service = herald.Service("bench", concurrency=16)
    done = asyncio.Event()
    handled = 0

    @service.on(Tick)
    async def handle(event: Tick, ctx: herald.Context) -> None:
        nonlocal handled
        handled += 1
        if handled == events:
            done.set()

    name = f"memory://tracing-bench-{os.getpid()}-{mode}"
    async with herald.connect(name, middleware=middleware) as bus:
        worker = await bus.start(service)
        started, cpu = time.perf_counter(), time.process_time()
        for first in range(0, events, 500):
            await bus.publish_many(Tick(n=n) for n in range(first, min(first + 500, events)))
        await done.wait()
        elapsed = time.perf_counter() - started
        await worker.stop()
    if provider is not None:
        provider.shutdown()  # exports what is queued: its CPU time counts too
    return Round(events / elapsed, (time.process_time() - cpu) / events * 1e6)


def run(events: int, rounds: int) -> dict[str, list[Round]]:
    runs: dict[str, list[Round]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            runs[mode].append(asyncio.run(one_round(events, mode)))
    return runs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing_bench")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    runs = run(args.events, args.rounds)
    off = statistics.median(r.rate for r in runs["off"])
    medians = {}
    for mode, rounds in runs.items():
        rate = statistics.median(r.rate for r in rounds)
        cpu = statistics.median(r.cpu for r in rounds)
        medians[mode] = rate
        shown = " ".join(f"{r.rate:,.0f}" for r in rounds)
        print(
            f"{mode:<12} median {rate:>8,.0f} ev/s {rate / off:5.2f}x of off"
            f"  {cpu:6.1f} us CPU/event   ({shown})"
        )
    print(f"{args.rounds} interleaved rounds of {args.events:,} events")
    return medians


if __name__ == "__main__":
    main()
