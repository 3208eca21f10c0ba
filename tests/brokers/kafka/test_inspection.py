"""Queue inspection against a real Kafka-protocol server (Tansu, started by the tests):
depth when acks arrive out of order, and the report of a process that died."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from herald.broker import Delivery, Prefetch, Subscription
from herald.brokers import broker_from_url
from herald.brokers.kafka import KafkaBroker
from herald.brokers.kafka.presence import Presence
from herald.capabilities import QueueStats
from herald.message import Message
from herald.testing.recorder import until

from .server import kafka_url

pytestmark = pytest.mark.kafka


@pytest.fixture
async def url() -> AsyncIterator[str]:
    url = kafka_url(f"i{uuid.uuid4().hex[:10]}", partitions=1)
    yield url
    async with broker_from_url(url) as broker:
        await broker.destroy()


def _counts(s: QueueStats) -> tuple[int, int | None, int | None]:
    return s.depth, s.in_flight, s.consumers


async def test_depth_counts_acks_above_an_unsettled_offset_as_settled(url: str) -> None:
    """One partition, four deliveries held; the last two acked first cannot be
    committed, yet they are neither waiting nor in flight."""
    sub = Subscription("depth", "test.item")
    async with KafkaBroker.from_url(url) as broker:
        await broker.declare(sub)
        await broker.publish([Message(type="test.item", body=b"%d" % i) for i in range(4)])

        async def stats() -> tuple[int, int | None, int | None]:
            (found,) = await broker.inspect_queues([sub.queue])
            return _counts(found)

        taken: list[Delivery] = []
        stream = broker.consume(sub, Prefetch(4))

        async def pull() -> None:
            async for delivery in stream:
                taken.append(delivery)

        puller = asyncio.create_task(pull())
        try:
            await until(stats, lambda c: c == (0, 4, 1), what="4 in flight")
            assert [d.message.body for d in taken] == [b"0", b"1", b"2", b"3"]
            await taken[3].ack()
            await taken[2].ack()
            await until(stats, lambda c: c == (0, 2, 1), what="2 settled above offset 0")
            await taken[0].ack()
            await until(stats, lambda c: c == (0, 1, 1), what="offset 0 committed")
            await broker.publish([Message(type="test.item", body=b"4")])
            await until(stats, lambda c: c == (0, 2, 1), what="a fifth one taken")
            for delivery in taken[1:2] + taken[4:]:
                await delivery.ack()
            (done,) = await until(
                lambda: broker.inspect_queues([sub.queue]),
                lambda s: _counts(s[0]) == (0, 0, 1),
                what="all committed",
            )
            assert done.oldest_age == 0.0, done
        finally:
            puller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await puller
            await stream.aclose()
        await until(stats, lambda c: c == (0, 0, 0), what="the consumer gone")


async def test_a_dead_process_stops_counting_once_its_report_expired(url: str) -> None:
    """A process that dies leaves its report (no tombstone): it counts until its
    ``expires`` passed, then no more; what it held counts as waiting, as old as
    the record is."""
    sub = Subscription("dead", "test.item")
    async with KafkaBroker.from_url(url) as broker:
        await broker.declare(sub)
        topology = broker._parts().topology
        producer = AIOKafkaProducer(bootstrap_servers=broker.settings.bootstrap)
        await producer.start()
        an_hour_ago = int((time.time() - 3600) * 1000)
        topic = topology.names.events("test.item")
        await producer.send_and_wait(topic, b"x", timestamp_ms=an_hour_ago)
        dead = Presence(producer, topology, lambda: {sub.queue: [1, 1, 0]}, ttl=2.0)
        try:

            async def stats() -> tuple[int, int | None, int | None]:
                (found,) = await broker.inspect_queues([sub.queue])
                return _counts(found)

            dead.changed()
            await until(stats, lambda c: c == (0, 1, 1), what="the report counted")
            await producer.stop()  # the process is gone: no more writes, no tombstone
            await until(stats, lambda c: c == (1, 0, 0), what="the report expired")
            (found,) = await broker.inspect_queues([sub.queue])
            assert found.oldest_age is not None and found.oldest_age > 3000, found
        finally:
            await dead.close()
            await producer.stop()
