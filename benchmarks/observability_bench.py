"""What metrics, tracing and telemetry cost: events/s through a service, all off against
metrics, tracing, and both, interleaved in the same run, on any broker.

``python -m benchmarks.observability_bench [--events N] [--rounds R] [--broker URL]
[--modes off,metrics,...] [--sample RATIO]`` publishes N events in batches of 500 and
handles them in one service (concurrency 16, a handler that does nothing) once per
mode per round, the order rotating every round:

- ``off``: no middleware;
- ``metrics``: :class:`herald.metrics.MetricsMiddleware` on a registry of its own;
- ``tracing-api``: :class:`herald.tracing.TracingMiddleware` without an SDK (the
  API's no-op tracer: what a library user pays before configuring OpenTelemetry);
- ``tracing``: the middleware on an SDK provider whose batch processor hands every
  span to an exporter that drops it;
- ``tracing-nosettle``: the same with ``settle=False`` (no settle spans);
- ``both``: tracing, then metrics;
- ``both-sampled``: the same with the SDK sampling a share of the traces
  (``ParentBased(TraceIdRatioBased(--sample))``, default 1%), what a user sets where
  a span per delivery costs too much: the spans not sampled are not recorded;
- ``telemetry``: :class:`herald.telemetry.TelemetryMiddleware` (counts, latency buckets
  and one trail record per message, reported on the bus every 2 s, for
  ``herald dashboard``);
- ``platform``: tracing, metrics and telemetry (as the HR platform runs them).

It prints each way's median throughput, its ratio to ``off`` and the median CPU time
per event (the process's threads; the SDK's export thread included). ``--spans N``
then times N spans shaped as a process span, started and ended without Herald, with
the SDK recording them, with the SDK not sampling them, and with the API alone: the
floor under a traced delivery, next to a delivery of ``off``. ``--broker``
defaults to ``memory://``; with ``amqp://...`` each run uses a namespace of its own,
removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import NamedTuple

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, NoOpTracerProvider, SpanContext, SpanKind
from prometheus_client import CollectorRegistry

import herald
from herald.metrics import MetricsMiddleware
from herald.telemetry import TelemetryMiddleware
from herald.tracing import TracingMiddleware

__all__ = ["DEFAULT_MODES", "DEFAULT_SAMPLE", "MODES", "Round", "main", "one_round"]

MODES = (
    "off", "metrics", "tracing-api", "tracing", "tracing-nosettle", "both", "both-sampled",
    "telemetry", "platform",
)  # fmt: skip
DEFAULT_MODES = ("off", "metrics", "tracing", "both")
DEFAULT_SAMPLE = 0.01
BATCH = 500


class Tick(herald.Event, type="bench.tick"):
    n: int


class Round(NamedTuple):
    rate: float
    """Events/s, wall clock."""
    cpu: float
    """CPU microseconds per event."""


class Dropping(SpanExporter):
    """Takes every span and keeps none."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def with_namespace(url: str) -> str:
    """``url`` with a namespace of its own (a fresh hub on ``memory://``)."""
    if url.startswith("memory://"):
        return f"memory://observability-bench-{uuid.uuid4().hex[:8]}"
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}namespace=ob{uuid.uuid4().hex[:10]}"


def _middleware(
    mode: str, sample: float = DEFAULT_SAMPLE
) -> tuple[list[herald.Middleware], TracerProvider | None]:
    chain: list[herald.Middleware] = []
    provider = None
    if mode == "tracing-api":
        chain.append(TracingMiddleware(tracer_provider=NoOpTracerProvider()))
    elif mode in ("tracing", "tracing-nosettle", "both", "both-sampled", "platform"):
        sampler = ParentBased(TraceIdRatioBased(sample)) if mode == "both-sampled" else None
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(BatchSpanProcessor(Dropping(), max_queue_size=65536))
        settle = mode != "tracing-nosettle"
        chain.append(TracingMiddleware(settle=settle, tracer_provider=provider))
    if mode in ("metrics", "both", "both-sampled", "platform"):
        chain.append(MetricsMiddleware(CollectorRegistry()))
    if mode in ("telemetry", "platform"):
        chain.append(TelemetryMiddleware())
    return chain, provider


async def one_round(url: str, events: int, mode: str, sample: float = DEFAULT_SAMPLE) -> Round:
    """One run on the broker at ``url``, observed as ``mode`` says."""
    middleware, provider = _middleware(mode, sample)
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
        reporting = [
            asyncio.create_task(m.run(bus))
            for m in middleware
            if isinstance(m, TelemetryMiddleware)
        ]
        worker = await bus.start(service)
        started, cpu = time.perf_counter(), time.process_time()
        for first in range(0, events, BATCH):
            await bus.publish_many(Tick(n=n) for n in range(first, min(first + BATCH, events)))
        await done.wait()
        elapsed = time.perf_counter() - started
        await worker.stop()
        for task in reporting:
            task.cancel()
        await asyncio.gather(*reporting, return_exceptions=True)
        if provider is not None:
            provider.shutdown()  # exports what is queued: its CPU time counts too
        cpu_per_event = (time.process_time() - cpu) / events * 1e6
        if not url.startswith("memory://"):
            await bus.broker.destroy()
    return Round(events / elapsed, cpu_per_event)


async def measure(
    url: str,
    events: int,
    rounds: int,
    modes: Sequence[str] = DEFAULT_MODES,
    sample: float = DEFAULT_SAMPLE,
) -> dict[str, list[Round]]:
    """Interleaved runs: each mode's rounds, the order rotating every round."""
    await one_round(url, min(events, 2_000), "both")  # warm-up: imports, caches, connections
    runs: dict[str, list[Round]] = {mode: [] for mode in modes}
    for index in range(rounds):
        shift = index % len(modes)
        for mode in (*modes[shift:], *modes[:shift]):
            runs[mode].append(await one_round(url, events, mode, sample))
    return runs


def span_costs(spans: int = 20_000) -> dict[str, float]:
    """CPU microseconds to start and end one span shaped as a process span (its eight
    attributes and a link), without Herald: the floor under a traced delivery."""
    link = [Link(SpanContext(0x5B8E_FFF7_9803_8103, 0xEEE1_9B7E, is_remote=True))]
    attributes: dict[str, str | int] = {
        "messaging.system": "herald",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "bench.tick",
        "messaging.destination.subscription.name": "bench.bench.tick",
        "messaging.consumer.group.name": "bench",
        "messaging.message.id": uuid.uuid4().hex,
        "messaging.message.body.size": 8,
    }
    found = {}
    for way, sampler in (
        ("SDK recording", None),
        ("SDK not sampled", ParentBased(TraceIdRatioBased(0.0))),
    ):
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(BatchSpanProcessor(Dropping(), max_queue_size=65536))
        found[way] = _span_cost(provider, attributes, link, spans)
        provider.shutdown()
    found["API only (no SDK)"] = _span_cost(NoOpTracerProvider(), attributes, link, spans)
    return found


def _span_cost(
    provider: TracerProvider | NoOpTracerProvider,
    attributes: dict[str, str | int],
    links: list[Link],
    spans: int,
) -> float:
    tracer = provider.get_tracer("bench")
    root = otel_context.Context()
    started = time.process_time()
    for _ in range(spans):
        tracer.start_span("process bench.tick", root, SpanKind.CONSUMER, attributes, links).end()
    if isinstance(provider, TracerProvider):
        provider.force_flush()
    return (time.process_time() - started) / spans * 1e6


def _modes(text: str) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in chosen if m not in MODES]
    if unknown or "off" not in chosen:
        raise argparse.ArgumentTypeError(f"modes from {', '.join(MODES)}, with off among them")
    return chosen


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.observability_bench")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--broker", default="memory://", metavar="URL")
    parser.add_argument("--modes", type=_modes, default=DEFAULT_MODES, metavar="M,M,...")
    parser.add_argument(
        "--sample", type=float, default=DEFAULT_SAMPLE, metavar="RATIO",
        help="share of traces both-sampled records (default 0.01)",
    )  # fmt: skip
    parser.add_argument(
        "--spans", type=int, default=0, metavar="N",
        help="also time N process spans alone: SDK recording, SDK not sampled, API only",
    )  # fmt: skip
    args = parser.parse_args(argv)
    runs = asyncio.run(measure(args.broker, args.events, args.rounds, args.modes, args.sample))
    off = statistics.median(r.rate for r in runs["off"])
    medians = {}
    for mode, rounds in runs.items():
        rate = statistics.median(r.rate for r in rounds)
        cpu = statistics.median(r.cpu for r in rounds)
        medians[mode] = rate
        shown = " ".join(f"{r.rate:,.0f}" for r in rounds)
        print(
            f"{mode:<16} median {rate:>8,.0f} ev/s {rate / off:5.2f}x of off"
            f"  {cpu:7.1f} us CPU/event   ({shown})"
        )
    print(f"{args.rounds} interleaved rounds of {args.events:,} events on {args.broker}")
    if args.spans:
        off_cpu = statistics.median(r.cpu for r in runs["off"])
        for way, cost in span_costs(args.spans).items():
            print(f"span {way:<21} {cost:7.1f} us CPU  {cost / off_cpu:5.2f}x an event of off")
    return medians


if __name__ == "__main__":
    main()
