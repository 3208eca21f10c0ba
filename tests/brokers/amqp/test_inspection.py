"""``QueueInspection`` on RabbitMQ, over AMQP alone and through the management API.

The scene: 5 messages published to a queue consumed with a prefetch of one; the
first is retried with a long delay and the second is held unsettled. So 3 are
ready, 1 waits out its retry delay (depth 4), 1 is in flight, 1 consumer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from herald.broker import Delivery, Prefetch, Subscription
from herald.brokers import broker_from_url
from herald.brokers.amqp import AMQPBroker
from herald.capabilities import QueueInspection, QueueStats
from herald.errors import BrokerError, CapabilityError
from herald.message import Message
from herald.testing import until

from .conftest import destroy
from .support import MANAGEMENT, SERVER, next_of, require_management

pytestmark = pytest.mark.amqp

SUB = Subscription("svc", "job.created")
IDLE = Subscription("svc", "job.deleted")


@pytest.fixture
async def scene(broker: AMQPBroker) -> AsyncIterator[AsyncGenerator[Delivery, None]]:
    await broker.declare(IDLE)
    await broker.declare(SUB)
    await broker.publish([Message(type="job.created", body=str(n).encode()) for n in range(5)])
    stream = broker.consume(SUB, Prefetch(1))
    first = await next_of(stream)
    await first.retry(300, {})
    await next_of(stream)  # held: in flight
    try:
        yield stream
    finally:
        await stream.aclose()


async def test_over_amqp_counts_are_exact(broker: AMQPBroker, scene: object) -> None:
    assert isinstance(broker, QueueInspection)
    stats = await broker.inspect_queues([SUB.queue, "svc.nothing", IDLE.queue])
    assert stats == [
        QueueStats("svc.job.created", depth=4, in_flight=None, consumers=1, oldest_age=None),
        QueueStats("svc.job.deleted", depth=0, in_flight=None, consumers=0, oldest_age=0.0),
    ]
    with pytest.raises(CapabilityError, match="management"):
        await broker.inspect_queues()


async def test_through_the_management_api(namespace: str, scene: object) -> None:
    require_management()
    url = f"{SERVER}?namespace={namespace}&management={MANAGEMENT}"
    broker = broker_from_url(url)
    assert isinstance(broker, AMQPBroker)
    await broker.connect()
    try:
        wanted = [
            ("svc.job.created", 4, 1, 1),
            ("svc.job.deleted", 0, 0, 0),
        ]

        def counts(stats: list[QueueStats]) -> list[tuple[str, int, int | None, int | None]]:
            return [(s.queue, s.depth, s.in_flight, s.consumers) for s in stats]

        named = await until(
            lambda: broker.inspect_queues([SUB.queue, IDLE.queue, "svc.nothing"]),
            lambda stats: counts(stats) == wanted and stats[0].oldest_age is not None,
            what="the management stats",
        )
        created, idle = named
        assert created.oldest_age is not None and 0 <= created.oldest_age < time.time()
        assert idle.oldest_age == 0.0
        every = await broker.inspect_queues()
        assert counts(every) == wanted, "the namespace's subscription queues, sorted"
    finally:
        await broker.close()


async def test_management_credentials_come_from_the_url(namespace: str) -> None:
    require_management()
    good = broker_from_url(f"{SERVER}?namespace={namespace}&management={MANAGEMENT}")
    wrong = broker_from_url(
        f"amqp://guest:guest@127.0.0.1/?namespace={namespace}"
        "&management=http://guest:n0t-the-pw@127.0.0.1:15672"
    )
    assert isinstance(good, AMQPBroker) and isinstance(wrong, AMQPBroker)
    await good.connect()
    await wrong.connect()
    try:
        await good.declare(SUB)
        await until(
            lambda: good.inspect_queues([SUB.queue]),
            lambda stats: [s.queue for s in stats] == [SUB.queue],
            what="the new queue",
        )
        with pytest.raises(BrokerError, match="401") as info:
            await wrong.inspect_queues()
        assert "n0t-the-pw" not in str(info.value)
    finally:
        await destroy(f"{SERVER}?namespace={namespace}")
        await good.close()
        await wrong.close()


async def test_consumers_are_counted_now_waiting_ones_too(namespace: str) -> None:
    """The management API's numbers are seconds old; a classic queue's consumers are
    counted live all the same, the waiting consumers of an exclusive queue too."""
    require_management()
    url = f"{SERVER}?namespace={namespace}&management={MANAGEMENT}"
    brokers = [broker_from_url(url) for _ in range(3)]
    for each in brokers:
        await each.connect()
    inspector, *consuming = brokers
    assert isinstance(inspector, AMQPBroker)
    exclusive = Subscription("svc", "job.created", exclusive=True)
    try:
        await inspector.declare(exclusive)
        tasks = [asyncio.create_task(drain(b.consume(exclusive, Prefetch(1)))) for b in consuming]

        async def consumers() -> int | None:
            [stats] = await inspector.inspect_queues([exclusive.queue])
            return stats.consumers

        await until(consumers, lambda n: n == 2, 20, "two attached")
        for left, task in enumerate(tasks):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert await consumers() == 1 - left, "counted now, not when the statistics come"
    finally:
        await destroy(url)
        for each in brokers:
            await each.close()


async def drain(stream: AsyncGenerator[Delivery, None]) -> None:
    async for delivery in stream:
        await delivery.ack()
