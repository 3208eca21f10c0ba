"""What recording metrics costs: events/s through a service with and without
:class:`herald.metrics.MetricsMiddleware`, in the same run.

``python -m benchmarks.metrics_bench [--events N] [--rounds R] [--broker URL]``
publishes N events in batches of 500 and handles them in one service (concurrency
16), once without metrics and once with them, per round; the order flips every
round (off on, on off, ...) so drift on a noisy machine hits both alike. Prints each
run, the medians and the overhead (1 - on/off). ``--broker`` defaults to
``memory://``; an ``amqp://`` URL runs against RabbitMQ, each run in a namespace of
its own, removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry

import herald
from herald.metrics import MetricsMiddleware

__all__ = ["main", "one_run", "with_namespace"]

BATCH = 500


class Tick(herald.Event, type="bench.tick"):
    n: int


def with_namespace(url: str) -> str:
    """``url`` with a namespace of its own (a fresh hub on ``memory://``)."""
    if url.startswith("memory://"):
        return f"memory://metrics-bench-{uuid.uuid4().hex[:8]}"
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}namespace=mb{uuid.uuid4().hex[:10]}"


async def one_run(url: str, events: int, metrics: bool) -> float:
    """Events/s of one run: publish ``events`` and wait until all were handled."""
    service = herald.Service("bench", concurrency=16)
    done = asyncio.Event()
    handled = 0

    @service.on(Tick)
    async def handle(event: Tick) -> None:
        nonlocal handled
        handled += 1
        if handled == events:
            done.set()

    options: dict[str, Any] = {}
    if metrics:
        options["middleware"] = [MetricsMiddleware(CollectorRegistry())]
    async with herald.connect(with_namespace(url), **options) as bus:
        worker = await bus.start(service)
        started = time.perf_counter()
        for first in range(0, events, BATCH):
            await bus.publish_many(Tick(n=n) for n in range(first, min(first + BATCH, events)))
        await done.wait()
        elapsed = time.perf_counter() - started
        await worker.stop()
        if not url.startswith("memory://"):
            await bus.broker.destroy()
    return events / elapsed


async def measure(url: str, events: int, rounds: int) -> dict[str, list[float]]:
    """Interleaved runs: ``{"off": [...], "on": [...]}`` events/s."""
    await one_run(url, min(events, 2_000), False)  # warm-up: imports, caches, connections
    runs: dict[str, list[float]] = {"off": [], "on": []}
    for index in range(rounds):
        order = ("off", "on") if index % 2 == 0 else ("on", "off")
        for mode in order:
            runs[mode].append(await one_run(url, events, mode == "on"))
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_bench")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--broker", default="memory://", metavar="URL")
    args = parser.parse_args(argv)
    runs = asyncio.run(measure(args.broker, args.events, args.rounds))
    for mode, values in runs.items():
        shown = " ".join(f"{v:,.0f}" for v in values)
        print(f"metrics {mode:<4} median {statistics.median(values):>9,.0f} ev/s   ({shown})")
    off, on = (statistics.median(runs[mode]) for mode in ("off", "on"))
    print(
        f"overhead of metrics: {1 - on / off:+.1%} "
        f"({args.rounds} interleaved rounds of {args.events} events on {args.broker})"
    )


if __name__ == "__main__":
    main()
