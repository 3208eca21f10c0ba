"""QueueInspection read from Redis: exact counts, the same from every process."""

from __future__ import annotations

import asyncio

import pytest

from herald.broker import Prefetch, Subscription
from herald.brokers.redis import RedisBroker
from herald.capabilities import QueueInspection, QueueStats

from .conftest import redis_broker, shared_url
from .helpers import counts, stats, take, tick

pytestmark = pytest.mark.redis


async def test_counts_follow_each_settlement_exactly(namespace: str) -> None:
    url = shared_url(namespace, lease=30, block=0.05)
    sub = Subscription("inspect", "demo.tick")
    async with redis_broker(url) as broker, redis_broker(url) as elsewhere:
        assert isinstance(broker, QueueInspection)
        await broker.declare(sub)
        assert await broker.inspect_queues() == [QueueStats(sub.queue, 0, 0, 0, 0.0)]
        await broker.publish([tick(n) for n in range(5)])
        stream = broker.consume(sub, Prefetch(2))
        one, two = await anext(stream), await anext(stream)
        assert counts(await stats(broker, sub.queue)) == {
            "depth": 3,
            "in_flight": 2,
            "consumers": 1,
        }
        await one.retry(60, {})
        assert counts(await stats(broker, sub.queue)) == {
            "depth": 4,
            "in_flight": 1,
            "consumers": 1,
        }, "a retry waiting out its delay counts in the depth"
        await two.release()
        assert counts(await stats(broker, sub.queue)) == {
            "depth": 5,
            "in_flight": 0,
            "consumers": 1,
        }, "a released delivery waits again at once"
        three = await anext(stream)
        await three.ack()
        await stream.aclose()
        here = await broker.inspect_queues([sub.queue])
        there = await elsewhere.inspect_queues([sub.queue])
        assert [(s.depth, s.in_flight, s.consumers) for s in here] == [(4, 0, 0)]
        assert [(s.depth, s.in_flight, s.consumers) for s in there] == [(4, 0, 0)]


async def test_consumers_are_those_alive(namespace: str) -> None:
    url = shared_url(namespace, lease=0.5, block=0.05)
    sub = Subscription("alive", "demo.tick")
    async with redis_broker(url) as a, redis_broker(url) as b:
        await a.declare(sub)
        streams = [a.consume(sub, Prefetch(1)) for _ in range(2)] + [b.consume(sub, Prefetch(1))]
        waiting = [asyncio.ensure_future(anext(s)) for s in streams]
        for _ in range(200):
            if (await stats(a, sub.queue)).consumers == 3:
                break
            await asyncio.sleep(0.02)
        assert (await stats(b, sub.queue)).consumers == 3
        await asyncio.sleep(1.5)  # three leases: the heartbeat keeps them alive
        assert (await stats(b, sub.queue)).consumers == 3
        for future in waiting:
            future.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        for stream in streams:
            await stream.aclose()
        assert (await stats(b, sub.queue)).consumers == 0


async def test_oldest_age_is_the_first_waiting_entrys_wait(broker: RedisBroker) -> None:
    sub = Subscription("age", "demo.tick")
    await broker.declare(sub)
    await broker.publish([tick(1)])
    await asyncio.sleep(0.3)
    await broker.publish([tick(2)])
    first = await stats(broker, sub.queue)
    assert 0.3 <= first.oldest_age < 60, first  # seconds, from the first entry's id
    (delivery,) = await take(broker, sub, 1)
    second = await stats(broker, sub.queue)
    assert second.oldest_age < first.oldest_age, "the first one left: the second is oldest"
    await delivery.ack()
    (last,) = await take(broker, sub, 1)
    await last.ack()
    assert (await stats(broker, sub.queue)).oldest_age == 0.0, "nothing waits"


async def test_names_are_filtered_and_sorted(broker: RedisBroker) -> None:
    for sub in (Subscription("zeta", "demo.tick"), Subscription("alpha", "demo.tick")):
        await broker.declare(sub)
    assert [s.queue for s in await broker.inspect_queues()] == [
        "alpha.demo.tick",
        "zeta.demo.tick",
    ]
    found = await broker.inspect_queues(["zeta.demo.tick", "nobody.demo.tick", "alpha.demo.tick"])
    assert [s.queue for s in found] == ["alpha.demo.tick", "zeta.demo.tick"]
    assert await broker.inspect_queues(["nobody.demo.tick"]) == []
