"""DeadLetterAdmin on Redis: list, replay, purge, and retention by age."""

from __future__ import annotations

import asyncio

import pytest

from herald.broker import Prefetch, Subscription
from herald.brokers.redis import RedisBroker
from herald.capabilities import DeadLetterAdmin
from herald.deadletter import DeadLetterReason
from herald.errors import BrokerError

from .conftest import raw_client, redis_broker, shared_url
from .helpers import counts, number, stats, take, tick

pytestmark = pytest.mark.redis


async def _dead_letter(broker: RedisBroker, sub: Subscription, *numbers: int) -> list[str]:
    await broker.publish([tick(n) for n in numbers])
    deliveries = await take(broker, sub, len(numbers))
    for d in deliveries:
        await d.dead_letter(DeadLetterReason(sub.queue, "ValueError", f"bad {number(d)}", 1))
    return [d.message.id for d in deliveries]


async def test_dead_letter_replay_and_purge(broker: RedisBroker) -> None:
    assert isinstance(broker, DeadLetterAdmin)
    sub = Subscription("dl", "demo.tick")
    await broker.declare(sub)
    ids = await _dead_letter(broker, sub, *range(5))
    assert counts(await stats(broker, sub.queue)) == {"depth": 0, "in_flight": 0, "consumers": 0}
    letters = await broker.dead_letters("dl")
    assert [dl.message.id for dl in letters] == ids
    assert letters[0].reason.error_type == "ValueError" and letters[0].reason.queue == sub.queue
    assert not any(k.startswith("herald-dl-") for k in letters[0].message.headers)
    assert len(await broker.dead_letters("dl", limit=2)) == 2

    assert await broker.purge_dead_letters("dl", [ids[0]]) == 1
    progress: list[tuple[int, int]] = []
    replayed = await broker.replay_dead_letters(
        "dl", ids[1:3], progress=lambda d, t: progress.append((d, t))
    )
    assert replayed == 2 and progress[-1] == (2, 2)
    back = await take(broker, sub, 2)
    assert [d.message.id for d in back] == ids[1:3]
    assert all(d.attempt == 1 for d in back)
    for d in back:
        await d.ack()
    assert await broker.purge_dead_letters("dl") == 2
    assert await broker.dead_letters("dl") == []


async def test_replay_to_a_queue_that_is_gone_moves_nothing(broker: RedisBroker) -> None:
    """A transient queue is removed when its consumer stops; its dead letters stay."""
    sub = Subscription("gone", "demo.tick", durable=False)
    await broker.declare(sub)
    await broker.publish([tick(1)])
    stream = broker.consume(sub, Prefetch(1))
    delivery = await anext(stream)
    await delivery.dead_letter(DeadLetterReason(sub.queue, "ValueError", "bad", 1))
    await stream.aclose()
    assert await broker.inspect_queues([sub.queue]) == []
    with pytest.raises(BrokerError, match="no longer exists"):
        await broker.replay_dead_letters("gone")
    assert [dl.message.id for dl in await broker.dead_letters("gone")] == [delivery.message.id]


async def test_dead_letters_expire_after_the_retention(namespace: str) -> None:
    """dlq_retention=2: each dead-lettering trims letters older than that, listing
    trims too, and the stream itself expires natively two seconds after its newest."""
    sub = Subscription("expiring", "demo.tick")
    async with redis_broker(shared_url(namespace, dlq_retention=2, block=0.05)) as broker:
        await broker.declare(sub)
        (first,) = await _dead_letter(broker, sub, 1)
        await asyncio.sleep(1.2)
        (second,) = await _dead_letter(broker, sub, 2)
        key = broker.keys.dead_letters("expiring")
        async with raw_client() as client:
            assert 0 < await client.pttl(key) <= 2000, "expires natively"
        assert [dl.message.id for dl in await broker.dead_letters("expiring")] == [first, second]
        await asyncio.sleep(1.2)  # the first is 2.4 s old, the second 1.2 s
        assert [dl.message.id for dl in await broker.dead_letters("expiring")] == [second]
        await asyncio.sleep(1.2)
        async with raw_client() as client:
            assert await client.exists(key) == 0, "gone without anyone listing it"
        assert await broker.dead_letters("expiring") == []


async def test_retention_zero_keeps_dead_letters_for_ever(namespace: str) -> None:
    sub = Subscription("forever", "demo.tick")
    url = shared_url(namespace, block=0.05)
    async with redis_broker(url + "&dlq_retention=1") as short:
        await short.declare(sub)
        await _dead_letter(short, sub, 1)
    async with redis_broker(url + "&dlq_retention=0") as broker:
        (kept,) = await _dead_letter(broker, sub, 2)
        await asyncio.sleep(1.2)
        async with raw_client() as client:
            assert await client.pttl(broker.keys.dead_letters("forever")) == -1, "no expiry"
        letters = await broker.dead_letters("forever")
        assert [dl.message.id for dl in letters][-1] == kept and len(letters) == 2


async def test_the_default_retention_is_fourteen_days(broker: RedisBroker) -> None:
    sub = Subscription("default", "demo.tick")
    await broker.declare(sub)
    await _dead_letter(broker, sub, 1)
    async with raw_client() as client:
        ttl = await client.pttl(broker.keys.dead_letters("default"))
    assert 14 * 86400 * 1000 - 60_000 < ttl <= 14 * 86400 * 1000
