"""How Herald's cost grows with the work: one broker, one dimension varied at a time.

A :class:`Point` publishes ``events`` events of ``payload`` bytes of body, spread
round-robin over ``services`` event types (one service with one queue per type), and
consumes them with ``consumers`` OS processes, each running every service (competing
consumers on each queue). The publisher is the calling process (``publish_many`` in
windows); throughput is timed from its first publish to the last event handled by
any consumer, counted through shared memory (each consumer process writes its own
count and last-handled time; the caller polls). ``memory://`` cannot cross
processes: its points run in the calling process, one consumer only.

A point that cannot run (broker unreachable, body over the broker's largest
message, timeout) becomes a row with its ``status`` saying why; nothing is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import RawArray
from typing import Any

import herald

from .brokers import broker_url, cleanup_url, consumer_context

__all__ = ["SWEEP_SERVICE", "Point", "PointResult", "event_class", "run_point"]

SWEEP_SERVICE = "sweep"
READY_TIMEOUT = 60.0
"""Seconds a consumer process may take to subscribe every queue of a point."""


@dataclass(frozen=True, slots=True)
class Point:
    """One measurement of the sweep."""

    broker: str
    dimension: str
    """``payload``, ``consumers`` or ``services``: which one this point varies."""
    payload: int
    consumers: int
    services: int
    events: int
    window: int = 200
    timeout: float = 60.0

    @property
    def value(self) -> int:
        return int(getattr(self, self.dimension))


@dataclass(slots=True)
class PointResult:
    point: Point
    status: str = "ok"
    handled: int = 0
    seconds: float | None = None
    events_per_s: float | None = None
    mib_per_s: float | None = None
    start_seconds: float | None = None
    """Seconds the consumers took to subscribe every queue (the slowest process)."""
    warnings: int = 0
    """Warnings and errors Herald logged in the consumer processes (reconnects, ...)."""
    first_warning: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class SweepEvent(herald.Event):
    seq: int
    pad: str = ""


@functools.cache
def event_class(index: int) -> type[SweepEvent]:
    """The event class of queue ``index`` (``sweep.e<index>``), the same in every process."""
    cls = types.new_class(f"SweepEvent{index}", (SweepEvent,), {"type": f"sweep.e{index}"})
    return cls


def _services(point: Point, on_event: Callable[[], None]) -> list[herald.Service]:
    services = []
    for index in range(point.services):
        service = herald.Service(f"{SWEEP_SERVICE}{index}", concurrency=16)

        async def handle(event: SweepEvent) -> None:
            on_event()

        service.on(event_class(index))(handle)
        services.append(service)
    return services


def _pad(point: Point) -> str:
    """Padding that makes the encoded body ``point.payload`` bytes, give or take a few."""
    return "x" * max(0, point.payload - 24)


async def _publish(bus: herald.Bus, point: Point) -> tuple[int, int]:
    pad = _pad(point)
    window = max(1, min(point.window, (4 << 20) // max(point.payload, 1)))
    first = time.time_ns()
    for start in range(0, point.events, window):
        stop = min(start + window, point.events)
        await bus.publish_many(
            [event_class(seq % point.services)(seq=seq, pad=pad) for seq in range(start, stop)]
        )
    return first, time.time_ns()


class _Counter(logging.Handler):
    """Counts the warnings and errors Herald logs in a consumer process."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.first = self.first or record.getMessage()[:160]


def _consumer_main(point: Point, url: str, slot: int, counts: Any, conn: Connection) -> None:
    counter = _Counter()
    logging.getLogger("herald").addHandler(counter)

    async def main() -> float:
        def on_event() -> None:
            counts[2 * slot] += 1
            counts[2 * slot + 1] = time.time_ns()

        async with herald.connect(url) as bus:
            started = time.perf_counter()
            workers = [await bus.start(s) for s in _services(point, on_event)]
            took = time.perf_counter() - started
            conn.send(("ready", took))
            await asyncio.to_thread(conn.recv)  # "stop"
            for worker in workers:
                await worker.stop()
        return took

    try:
        asyncio.run(main())
        conn.send(("warnings", (counter.count, counter.first)))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        conn.close()


async def _too_large(url: str, point: Point) -> str | None:
    async with herald.connect(url) as bus:
        limit = bus.broker.features.max_message_bytes
    if point.payload > limit:
        return f"n/a: body over the broker's largest message ({limit:,} B)"
    return None


def _finish(result: PointResult, first_ns: int, counts: Sequence[int]) -> None:
    point = result.point
    result.handled = sum(counts[0::2])
    last = max(counts[1::2])
    if result.handled < point.events:
        result.status = (
            f"failed: timed out after {point.timeout:.0f}s: "
            f"{result.handled:,}/{point.events:,} handled"
        )
        return
    result.seconds = max((last - first_ns) / 1e9, 1e-9)
    result.events_per_s = result.handled / result.seconds
    result.mib_per_s = result.events_per_s * point.payload / (1 << 20)


async def _wait_for(counts: Any, point: Point, deadline: float) -> None:
    while sum(counts[0::2]) < point.events and time.monotonic() < deadline:  # noqa: ASYNC110 - shared memory of other processes: nothing to await
        await asyncio.sleep(0.005)


async def _run_inline(point: Point, url: str) -> PointResult:
    result = PointResult(point)
    counts = [0, 0]

    def on_event() -> None:
        counts[0] += 1
        counts[1] = time.time_ns()

    async with herald.connect(url) as bus:
        started = time.perf_counter()
        workers = [await bus.start(s) for s in _services(point, on_event)]
        result.start_seconds = time.perf_counter() - started
        first, _ = await _publish(bus, point)
        await _wait_for(counts, point, time.monotonic() + point.timeout)
        for worker in workers:
            await worker.stop()
    _finish(result, first, counts)
    return result


def _run_processes(point: Point, url: str) -> PointResult:
    result = PointResult(point)
    ctx = consumer_context()
    counts: Any = RawArray("q", 2 * point.consumers)
    pipes: list[Connection] = []
    processes = []
    try:
        for slot in range(point.consumers):
            mine, theirs = ctx.Pipe()
            process = ctx.Process(
                target=_consumer_main, args=(point, url, slot, counts, theirs), daemon=True
            )
            process.start()
            theirs.close()
            pipes.append(mine)
            processes.append(process)
        took = []
        for pipe in pipes:
            if not pipe.poll(READY_TIMEOUT):
                raise TimeoutError(f"a consumer was not ready within {READY_TIMEOUT:.0f}s")
            kind, value = pipe.recv()
            if kind == "error":
                raise RuntimeError(value)
            took.append(float(value))
        result.start_seconds = max(took)

        async def publish() -> int:
            async with herald.connect(url) as bus:
                first, _ = await _publish(bus, point)
            await _wait_for(counts, point, time.monotonic() + point.timeout)
            return first

        first = asyncio.run(publish())
        _finish(result, first, list(counts))
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for pipe in pipes:
            with contextlib.suppress(OSError, EOFError):
                if pipe.poll(15):
                    kind, value = pipe.recv()
                    if kind == "warnings" and value[0]:
                        result.warnings += value[0]
                        result.first_warning = result.first_warning or value[1]
        for process in processes:
            process.join(15)
            if process.is_alive():
                process.terminate()
                process.join(5)
    return result


def run_point(point: Point, run_id: str) -> PointResult:
    """Measure ``point`` on a fresh namespace (removed afterwards)."""
    url = broker_url(point.broker, run_id)
    try:
        too_large = asyncio.run(asyncio.wait_for(_too_large(url, point), 30))
        if too_large:
            return PointResult(point, status=too_large)
        if point.broker == "memory":
            if point.consumers > 1:
                return PointResult(point, status="n/a: memory:// is one process")
            return asyncio.run(_run_inline(point, url))
        return _run_processes(point, url)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        return PointResult(
            point, status=f"failed: {type(exc).__name__}: {text[-1] if text else ''}"
        )
    finally:
        try:
            asyncio.run(asyncio.wait_for(cleanup_url(url), 60))
        except Exception as exc:
            print(f"  cleanup of {point.broker} failed: {exc!r}", flush=True)
