"""Small helpers shared by the Redis tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

from herald.broker import Delivery, Prefetch, Subscription
from herald.brokers.redis import RedisBroker
from herald.capabilities import QueueStats
from herald.message import Message

__all__ = ["counts", "number", "stats", "take", "tick", "until"]


def tick(n: int, size: int = 0, **headers: str) -> Message:
    body = json.dumps({"n": n, "pad": "x" * size}).encode()
    return Message(type="demo.tick", body=body, headers=headers)


def number(delivery: Delivery) -> int:
    n: int = json.loads(delivery.message.body)["n"]
    return n


async def take(
    broker: RedisBroker, sub: Subscription, count: int, prefetch: Prefetch | None = None
) -> list[Delivery]:
    """``count`` deliveries from ``sub`` (unsettled); the generator is closed afterwards."""
    got: list[Delivery] = []
    stream = broker.consume(sub, prefetch or Prefetch(max(count, 1)))
    try:
        async with asyncio.timeout(20):
            async for delivery in stream:
                got.append(delivery)
                if len(got) == count:
                    break
    finally:
        await stream.aclose()
    return got


async def stats(broker: RedisBroker, queue: str) -> QueueStats:
    (found,) = await broker.inspect_queues([queue])
    return found


def counts(found: QueueStats) -> Mapping[str, int | None]:
    return {"depth": found.depth, "in_flight": found.in_flight, "consumers": found.consumers}


async def until(broker: RedisBroker, queue: str, **expected: int) -> None:
    """Wait until ``queue``'s counts (depth, in_flight, consumers) are ``expected``."""
    seen: dict[str, int | None] = {}
    for _ in range(400):
        seen = {k: v for k, v in counts(await stats(broker, queue)).items() if k in expected}
        if seen == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{queue}: {seen}, expected {expected}")
