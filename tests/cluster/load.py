"""Load for the cluster and network-fault tests: a publisher that keeps going through
an outage, and consumers that record what they handled and when.

Times are ``time.monotonic()`` (one clock for every process of the machine), so a
child process's records line up with the parent's kill or cut.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from herald.bus import Bus
from herald.errors import BrokerError
from herald.service import Service
from herald.testing.events import Tick

__all__ = [
    "Handled",
    "Outcome",
    "Published",
    "merged",
    "outcome",
    "publish_until",
    "recording_service",
]


@dataclass
class Published:
    """What a publisher had confirmed, and the errors it was told about."""

    confirmed: list[tuple[int, float]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.confirmed)

    def confirm(self, numbers: range, when: float) -> None:
        self.confirmed.extend((n, when) for n in numbers)

    def fail(self, when: float, error: str) -> None:
        self.errors.append((when, error))

    def first_after(self, moment: float) -> float | None:
        """When the first publish after ``moment`` was confirmed."""
        return next((t for _, t in self.confirmed if t > moment), None)


@dataclass
class Handled:
    """What one consumer handled: (n, when), in order."""

    seen: list[tuple[int, float]] = field(default_factory=list)

    def add(self, n: int) -> None:
        self.seen.append((n, time.monotonic()))

    def numbers(self) -> Counter[int]:
        return Counter(n for n, _ in self.seen)

    def first_after(self, moment: float) -> float | None:
        return next((t for _, t in self.seen if t > moment), None)


def merged(consumers: Iterable[Handled]) -> Counter[int]:
    total: Counter[int] = Counter()
    for handled in consumers:
        total.update(handled.numbers())
    return total


@dataclass(frozen=True)
class Outcome:
    """A leader kill under load, seen from the clients (times in seconds after it)."""

    duplicates: int
    published_again: float
    consumed_again: float


def outcome(
    workers: dict[str, Handled],
    published: Published,
    total: int,
    leader: str,
    *,
    killed_at: float,
    at_kill: int,
    at_rejoin: int,
) -> Outcome:
    """Check that services ``a`` (consumers a1, a2) and ``b`` each handled every
    confirmed event and that every consumer handled events published after the killed
    node rejoined; count the duplicates and how soon publishing and consuming resumed."""
    service_a = merged([workers["a1"], workers["a2"]])
    service_b = workers["b"].numbers()
    assert set(service_a) == set(service_b) == set(range(total)), "lost or unknown events"
    for key, handled in workers.items():
        late = [n for n, _ in handled.seen if n >= at_rejoin]
        assert late, f"consumer {key} handled nothing published after {leader} rejoined"
    duplicates = sum(c - 1 for c in service_a.values()) + sum(c - 1 for c in service_b.values())
    consumed_again = min(
        next((t for n, t in w.seen if n >= at_kill), float("inf")) for w in workers.values()
    )
    published_again = published.first_after(killed_at) or float("inf")
    return Outcome(duplicates, published_again - killed_at, consumed_again - killed_at)


def recording_service(name: str, handled: Handled, concurrency: int = 8) -> Service:
    service = Service(name, concurrency=concurrency)

    @service.on(Tick)
    async def record(event: Tick) -> None:
        handled.add(event.n)

    return service


async def publish_until(
    bus: Bus,
    stop: asyncio.Event,
    published: Published,
    batch: int = 20,
    pause: float = 0.05,
    start: int = 0,
) -> None:
    """Publish Ticks start, start+1, ... in batches until ``stop`` is set. A batch that
    fails is recorded and sent again, the same messages (same ids: a server that
    stored it the first time keeps one copy), until it is confirmed."""
    n = start
    while not stop.is_set():
        messages = [bus.message(Tick(n=i)) for i in range(n, n + batch)]
        while True:
            try:
                await bus.publish_many(messages)
                break
            except BrokerError as exc:
                published.fail(time.monotonic(), f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2)
        published.confirm(range(n, n + batch), time.monotonic())
        n += batch
        await asyncio.sleep(pause)
