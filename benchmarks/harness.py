"""The measuring machinery: workload plans, payloads, the recorder, contenders.

A :class:`Contender` is one way of moving events (Herald on some broker, a raw
driver, another library). It knows how to publish a window of events and how to
consume them; the harness (:mod:`benchmarks.process`) runs the two sides in separate
processes and paces the publishing. Events carry their sequence number and the
wall-clock time (``time.time_ns()``) at which their publish call started, so the
consumer measures latency against the same host clock.
"""

from __future__ import annotations

import abc
import asyncio
import json
import time
from array import array
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import ClassVar, Protocol

__all__ = [
    "LATENCY",
    "PAD",
    "THROUGHPUT",
    "Contender",
    "Plan",
    "Publisher",
    "Recorder",
    "make_body",
    "parse_body",
    "percentile",
]

THROUGHPUT = "throughput"
LATENCY = "latency"
PAD = "x" * 150
"""Padding that brings an encoded event (seq, sent_ns, pad) to about 200 bytes."""


@dataclass(frozen=True, slots=True)
class Plan:
    """One measurement: what to publish, how, and what the consumer must see."""

    workload: str
    events: int
    window: int = 500
    """Throughput: events published concurrently (one batch) before awaiting confirms."""
    rate: float = 1000.0
    """Latency: events per second, one publish call each, sent on schedule."""
    not_before_ns: int = 0
    """Events stamped earlier than this are leftovers of an earlier run: ignored."""
    timeout: float = 60.0


def make_body(seq: int, sent_ns: int) -> bytes:
    """The JSON body every raw contender sends (~200 bytes)."""
    return json.dumps({"seq": seq, "sent_ns": sent_ns, "pad": PAD}).encode()


def parse_body(body: bytes) -> tuple[int, int]:
    data = json.loads(body)
    return int(data["seq"]), int(data["sent_ns"])


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(fraction * len(sorted_values) + 0.5 - 1e-9))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


class Recorder:
    """Counts what the consumer handled: unique events, duplicates, latencies."""

    def __init__(self, plan: Plan) -> None:
        self.expected = plan.events
        self.not_before_ns = plan.not_before_ns
        self.count = 0
        self.duplicates = 0
        self.stale = 0
        self.last_ns = 0
        self.latencies_ns = array("q")
        self._seen = bytearray(plan.events)
        self.done = asyncio.Event()

    @property
    def complete(self) -> bool:
        return self.count >= self.expected

    def handled(self, seq: int, sent_ns: int) -> None:
        """Call once per event handled, before acknowledging it."""
        now = time.time_ns()
        if sent_ns < self.not_before_ns or not 0 <= seq < self.expected:
            self.stale += 1
            return
        if self._seen[seq]:
            self.duplicates += 1
            return
        self._seen[seq] = 1
        self.count += 1
        self.last_ns = now
        self.latencies_ns.append(now - sent_ns)
        if self.count == self.expected:
            self.done.set()

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.latencies_ns)
        return {
            "count": self.count,
            "duplicates": self.duplicates,
            "stale": self.stale,
            "last_ns": self.last_ns,
            "p50_ms": percentile(ordered, 0.50) / 1e6,
            "p99_ms": percentile(ordered, 0.99) / 1e6,
            "max_ms": (ordered[-1] / 1e6) if ordered else 0.0,
        }


class Publisher(Protocol):
    async def publish(self, events: Sequence[tuple[int, int]]) -> None:
        """Publish ``(seq, sent_ns)`` events durably; return once all are confirmed."""


class Contender(abc.ABC):
    """One way of moving events. Built from a run id in each process that needs it."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    inline: ClassVar[bool] = False
    """Publisher and consumer share one process (in-process brokers only)."""
    max_events: ClassVar[int | None] = None
    """A cap on both runs' events for very slow contenders (the table shows the N)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    async def check(self) -> None:  # noqa: B027 - optional hook
        """Raise if the contender cannot run here (server down, adapter missing)."""

    @abc.abstractmethod
    def publisher(self) -> AbstractAsyncContextManager[Publisher]:
        """A connected publisher; connecting is not timed."""

    @abc.abstractmethod
    async def consume(self, recorder: Recorder, ready: Callable[[], None]) -> None:
        """Subscribe, call ``ready()``, report each event to ``recorder.handled``
        before acking it, and return (cleanly unsubscribed) once ``recorder.done``."""

    async def cleanup(self) -> None:  # noqa: B027 - optional hook
        """Delete whatever the run created (queues, streams, keys, files)."""
