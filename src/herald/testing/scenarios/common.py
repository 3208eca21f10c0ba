"""What the scenarios share: test services, publishing helpers, waiting for dead letters."""

from __future__ import annotations

import asyncio
import time

from ...bus import Bus
from ...context import Context
from ...deadletter import DeadLetter
from ...errors import BrokerError
from ...retry import RetryPolicy
from ...service import Service
from ..environment import Environment
from ..events import Tick
from ..recorder import Recorder

__all__ = [
    "CHILD_CONCURRENCY",
    "CHILD_PREFETCH",
    "FAST_RETRY",
    "MiB",
    "publish_through_outage",
    "publish_ticks",
    "tick_service",
    "wait_dead_letters",
]

FAST_RETRY = RetryPolicy(attempts=3, initial_delay=0.05, multiplier=2.0, max_delay=0.2, jitter=0)
MiB = 1024 * 1024
CHILD_CONCURRENCY = 4
CHILD_PREFETCH = 8
"""How the consumer processes of :mod:`herald.testing.child` consume."""


def tick_service(env: Environment, base: str, seen: Recorder[int], **kw: object) -> Service:
    """A service recording the ``n`` of every Tick it handles."""
    service = Service(env.service_name(base), **kw)  # type: ignore[arg-type]

    @service.on(Tick)
    async def record(event: Tick, ctx: Context) -> None:
        seen.add(event.n)

    return service


async def publish_ticks(env: Environment, numbers: range, batch: int = 200) -> None:
    async with env.connect() as bus:
        for start in range(numbers.start, numbers.stop, batch):
            chunk = range(start, min(start + batch, numbers.stop))
            await bus.publish_many(Tick(n=n) for n in chunk)


async def publish_through_outage(
    env: Environment, total: int, progress: list[int], deadline: float = 120.0
) -> None:
    """Publish Ticks 0..total-1 in batches of 100, retrying each batch through a
    broker outage until ``deadline`` seconds pass; ``progress[0]`` counts confirmed."""
    async with env.connect() as bus:
        for start in range(0, total, 100):
            batch = [Tick(n=n) for n in range(start, min(start + 100, total))]
            give_up = time.monotonic() + deadline
            while True:
                try:
                    await bus.publish_many(batch)
                    break
                except BrokerError:
                    if time.monotonic() > give_up:
                        raise
                    await asyncio.sleep(0.2)
            progress[0] += len(batch)
            await asyncio.sleep(0.005)


async def wait_dead_letters(
    bus: Bus, service: str, count: int, timeout: float = 30.0
) -> list[DeadLetter]:
    deadline = time.monotonic() + timeout
    while True:
        letters = await bus.dead_letters(service)
        if len(letters) >= count:
            return letters
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(letters)} of {count} dead letters after {timeout:.0f}s")
        await asyncio.sleep(0.05)
