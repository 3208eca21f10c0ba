"""What metrics and tracing cost together: events/s through a service, all off against
metrics, tracing, and both, interleaved in the same run, on any broker.

``python -m benchmarks.observability_bench [--events N] [--rounds R] [--broker URL]``
publishes N events in batches of 500 and handles them in one service (concurrency 16,
a handler that does nothing) four ways per round, the order rotating every round:

- ``off``: no middleware;
- ``metrics``: :class:`herald.metrics.MetricsMiddleware` on a registry of its own;
- ``tracing``: :class:`herald.tracing.TracingMiddleware` on an SDK provider whose
  batch processor hands every span to an exporter that drops it;
- ``both``: tracing, then metrics (as the HR platform runs them).

It prints each way's median throughput, its ratio to ``off`` and the median CPU time
per event (the process's threads; the SDK's export thread included). ``--broker``
defaults to ``memory://``; with ``amqp://...`` each run uses a namespace of its own,
removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry

import herald
from herald.metrics import MetricsMiddleware
from herald.tracing import TracingMiddleware

from .metrics_bench import with_namespace
from .tracing_bench import Dropping, Round, Tick

__all__ = ["MODES", "main", "one_round"]

MODES = ("off", "metrics", "tracing", "both")
BATCH = 500


def _middleware(mode: str) -> tuple[list[herald.Middleware], TracerProvider | None]:
    chain: list[herald.Middleware] = []
    provider = None
    if mode in ("tracing", "both"):
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Dropping(), max_queue_size=65536))
        chain.append(TracingMiddleware(tracer_provider=provider))
    if mode in ("metrics", "both"):
        chain.append(MetricsMiddleware(CollectorRegistry()))
    return chain, provider


async def one_round(url: str, events: int, mode: str) -> Round:
    """One run on the broker at ``url``, observed as ``mode`` says."""
    middleware, provider = _middleware(mode)
    service = herald.Service("bench", concurrency=16)
    done = asyncio.Event()
    handled = 0

    @service.on(Tick)
    async def handle(event: Tick) -> None:
        nonlocal handled
        handled += 1
        if handled == events:
            done.set()

    async with herald.connect(with_namespace(url), middleware=middleware) as bus:
        worker = await bus.start(service)
        started, cpu = time.perf_counter(), time.process_time()
        for first in range(0, events, BATCH):
            await bus.publish_many(Tick(n=n) for n in range(first, min(first + BATCH, events)))
        await done.wait()
        elapsed = time.perf_counter() - started
        await worker.stop()
        if provider is not None:
            provider.shutdown()  # exports what is queued: its CPU time counts too
        cpu_per_event = (time.process_time() - cpu) / events * 1e6
        if not url.startswith("memory://"):
            await bus.broker.destroy()
    return Round(events / elapsed, cpu_per_event)


async def measure(url: str, events: int, rounds: int) -> dict[str, list[Round]]:
    await one_round(url, min(events, 2_000), "both")  # warm-up: imports, caches, connections
    runs: dict[str, list[Round]] = {mode: [] for mode in MODES}
    for index in range(rounds):
        shift = index % len(MODES)
        for mode in MODES[shift:] + MODES[:shift]:
            runs[mode].append(await one_round(url, events, mode))
    return runs


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.observability_bench")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--broker", default="memory://", metavar="URL")
    args = parser.parse_args(argv)
    runs = asyncio.run(measure(args.broker, args.events, args.rounds))
    off = statistics.median(r.rate for r in runs["off"])
    medians = {}
    for mode, rounds in runs.items():
        rate = statistics.median(r.rate for r in rounds)
        cpu = statistics.median(r.cpu for r in rounds)
        medians[mode] = rate
        shown = " ".join(f"{r.rate:,.0f}" for r in rounds)
        print(
            f"{mode:<8} median {rate:>8,.0f} ev/s {rate / off:5.2f}x of off"
            f"  {cpu:7.1f} us CPU/event   ({shown})"
        )
    print(f"{args.rounds} interleaved rounds of {args.events:,} events on {args.broker}")
    return medians


if __name__ == "__main__":
    main()
