"""The adapter against a real Kafka-protocol server (Tansu, started by the tests):
commits under out-of-order settlement, retries that do not hold up a partition,
records with bad headers, releases, backfill."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import cast

import pytest
from aiokafka import AIOKafkaProducer

import herald
from herald.broker import Delivery, Prefetch, Subscription
from herald.brokers import broker_from_url
from herald.brokers.kafka import KafkaBroker
from herald.capabilities import RetainedHistory
from herald.errors import DecodeError, HeaderError
from herald.health import Health
from herald.message import Message
from herald.testing import eventually

from .server import kafka_url, shared_tansu

pytestmark = pytest.mark.kafka


@pytest.fixture
async def url() -> AsyncIterator[str]:
    url = kafka_url(f"u{uuid.uuid4().hex[:10]}", partitions=1)
    yield url
    async with broker_from_url(url) as broker:
        await broker.destroy()


async def _take(
    broker: KafkaBroker, sub: Subscription, n: int, prefetch: int = 50
) -> list[Delivery]:
    taken: list[Delivery] = []
    stream = broker.consume(sub, Prefetch(prefetch))

    async def pull() -> None:
        async for delivery in stream:
            taken.append(delivery)
            if len(taken) == n:
                return

    await asyncio.wait_for(pull(), 30)
    await stream.aclose()
    return taken


def _items(n: int) -> list[Message]:
    return [Message(type="test.item", body=str(i).encode()) for i in range(n)]


async def test_only_the_unfinished_and_what_follows_them_come_back(url: str) -> None:
    sub = Subscription("offsets", "test.item")
    async with KafkaBroker.from_url(url) as broker:
        await broker.declare(sub)
        await broker.publish(_items(10))
        first = await _take(broker, sub, 10)
        assert [d.message.body for d in first] == [str(i).encode() for i in range(10)]
        for i in (0, 1, 2, 5, 6, 7, 8, 9):  # 3 and 4 stay unfinished
            await first[i].ack()
    async with KafkaBroker.from_url(url) as broker:
        again = await _take(broker, sub, 7)
        assert [d.message.body for d in again] == [str(i).encode() for i in range(3, 10)]
        for delivery in again:
            await delivery.ack()
    async with KafkaBroker.from_url(url) as broker:
        await broker.publish(_items(1))
        (last,) = await _take(broker, sub, 1)
        assert last.message.body == b"0", "everything before it was committed"
        await last.ack()


async def test_a_retry_waits_in_its_tier_while_the_partition_goes_on(url: str) -> None:
    sub = Subscription("tiers", "test.item")
    async with KafkaBroker.from_url(url) as broker:
        await broker.declare(sub)
        await broker.publish(_items(1))
        stream = broker.consume(sub, Prefetch(10))
        first = await anext(stream)
        await first.retry(1.5, {"x-why": "later"})
        await broker.publish([Message(type="test.item", body=b"next")])
        after = await asyncio.wait_for(anext(stream), 30)
        assert after.message.body == b"next", "the retry did not hold up the partition"
        await after.ack()
        back = await asyncio.wait_for(anext(stream), 30)
        assert back.message.id == first.message.id and back.attempt == 2
        assert back.message.headers["x-why"] == "later"
        await back.ack()
        await stream.aclose()


async def test_records_with_bad_headers_are_handed_out_with_their_error(url: str) -> None:
    sub = Subscription("raw", "test.#")  # a record that names no type is of its topic's: "test"
    async with KafkaBroker.from_url(url) as broker:
        await broker.declare(sub)
        topic = broker._parts().topology.names.events("test.item")
        producer = AIOKafkaProducer(bootstrap_servers=shared_tansu().bootstrap)
        await producer.start()
        try:
            for headers in (
                [("ce_id", b"\xff")],
                [("herald-attempt", b"lots")],
                [("ce_type", b"no spaces allowed")],
            ):
                await producer.send_and_wait(topic, b"{}", headers=headers)
            await producer.send_and_wait(topic, b"{}", key=b"k1")
        finally:
            await producer.stop()
        taken = await _take(broker, sub, 4)
        errors = [type(d.error) for d in taken]
        assert errors == [DecodeError, HeaderError, DecodeError, type(None)]
        assert "herald-attempt" in str(taken[1].error)
        assert taken[3].message.subject == "k1" and taken[3].message.type == "test"
        for delivery in taken:
            await delivery.ack()


async def test_a_released_delivery_comes_back_after_a_restart_without_counting(url: str) -> None:
    sub = Subscription("lanes", "test.item")
    async with KafkaBroker.from_url(url) as broker:
        await broker.declare(sub)
        await broker.publish(_items(5))
        taken = await _take(broker, sub, 5)
        for delivery in taken[1:]:
            await delivery.ack()
        await taken[0].release()
    async with KafkaBroker.from_url(url) as broker:
        (again,) = await _take(broker, sub, 1)
        assert again.message.body == b"0" and again.attempt == 1, "released, not an attempt"
        await again.ack()


async def test_one_keys_lifecycle_comes_in_order_and_other_types_are_passed_over(
    url: str,
) -> None:
    """The types of a family share its topic: one key's events come in publish order
    across types, a queue gets only the types it asked for, and what it passed over
    is committed with the rest (nothing comes back after a restart)."""
    url = url.replace("partitions=1", "partitions=3")
    life = Subscription("svc", "life", ("test.created", "test.deleted"))
    sent = [
        Message(type=t, body=f"{i}".encode(), subject="k1")
        for i, t in enumerate(("test.created", "test.other", "test.other", "test.deleted"))
    ]
    async with KafkaBroker.from_url(url) as broker:
        await broker.declare(life)
        await broker.publish(sent)
        taken = await _take(broker, life, 2)
        assert [(d.message.type, d.message.body) for d in taken] == [
            ("test.created", b"0"),
            ("test.deleted", b"3"),
        ]
        for delivery in taken:
            await delivery.ack()
        await broker.publish([Message(type="test.created", body=b"next", subject="k1")])
        (after,) = await _take(broker, life, 1)
        assert after.message.body == b"next", "a passed-over or acked record came back"
        await after.ack()


async def test_backfill_starts_a_new_queue_at_the_oldest_retained_record(url: str) -> None:
    everything = Subscription("history", "test.item")
    recent = Subscription("recent", "test.item")
    async with KafkaBroker.from_url(url) as broker:
        assert isinstance(broker, RetainedHistory)
        await broker.publish(_items(1))
        await asyncio.sleep(0.2)
        since = datetime.now(UTC)
        await broker.publish([Message(type="test.item", body=f"{i}".encode()) for i in (1, 2)])
        assert await broker.backfill(everything) == 3
        assert await broker.backfill(recent, since) == 2
        assert await broker.backfill(everything) == 0, "a declared queue gets nothing again"
        await broker.publish([Message(type="test.item", body=b"after")])
        for sub, expected in (
            (everything, [b"0", b"1", b"2", b"after"]),
            (recent, [b"1", b"2", b"after"]),
        ):
            taken = await _take(broker, sub, len(expected))
            assert [d.message.body for d in taken] == expected, "one partition: publish order"
            assert all(d.attempt == 1 and d.error is None for d in taken)
            for delivery in taken:
                await delivery.ack()


async def test_a_rebalance_waits_for_held_deliveries_and_commits_them(url: str) -> None:
    """A second member joins while the first holds every delivery; the first settles
    them during the rebalance: the partitions move with those offsets committed, so
    the second member gets none of them again."""
    url = url.replace("partitions=1", "partitions=3")
    sub = Subscription("rebalance", "test.item")
    sent = [Message(type="test.item", body=f"{i}".encode(), subject=f"k{i}") for i in range(30)]
    async with KafkaBroker.from_url(url) as broker:
        await broker.declare(sub)
        await broker.publish(sent)
        first = broker.consume(sub, Prefetch(30))
        held = [await asyncio.wait_for(anext(first), 30) for _ in range(30)]
        second_got: list[Delivery] = []

        async def second() -> None:
            async for delivery in broker.consume(sub, Prefetch(30)):
                second_got.append(delivery)
                await delivery.ack()

        joining = asyncio.create_task(second())
        await asyncio.sleep(1.0)  # the join is under way: the first member's revoke waits
        for delivery in reversed(held):
            await delivery.ack()
        await asyncio.sleep(4.0)
        await broker.publish([Message(type="test.item", body=b"later", subject="k0")])
        late = asyncio.create_task(anext(first))
        for _ in range(100):
            if second_got or late.done():
                break
            await asyncio.sleep(0.1)
        late.cancel()
        joining.cancel()
        await asyncio.gather(late, joining, return_exceptions=True)
        await first.aclose()
    bodies = [d.message.body for d in second_got]
    assert bodies in ([], [b"later"]), f"delivered again after the rebalance: {bodies}"


async def test_a_member_is_ready_only_once_its_group_assigned_it_partitions(url: str) -> None:
    """Subscribing only asks to join the group (Tansu answers after a session timeout):
    until the join completes the member holds no partition, so the service is not
    ready; once ready, it holds its share."""
    url = url.replace("partitions=1", "partitions=3")
    service = herald.Service("joining")

    @service.on("test.item")
    async def noop(message: Message) -> None: ...

    async with herald.connect(url) as bus:
        health = Health(bus, services=["joining"])
        worker = await bus.start(service)
        sessions = cast(KafkaBroker, bus.broker)._parts().consumer.sessions
        await eventually(lambda: health.ready().ok, 30, "ready", interval=0.005)
        assert any(s.consumer.assignment() for s in sessions), "ready without partitions"
        await worker.stop()


async def test_a_stopping_member_commits_and_leaves_its_group_at_once(url: str) -> None:
    """A member that stops with nothing in hand commits what it handled and leaves
    the group at once (not after its drain deadline), so the other member gets every
    partition and none of what the first handled again."""
    url = url.replace("partitions=1", "partitions=3")
    sub = Subscription("leaving", "test.item")
    sent = [Message(type="test.item", body=f"{i}".encode(), subject=f"k{i}") for i in range(12)]
    async with KafkaBroker.from_url(url) as broker:
        await broker.declare(sub)
        got: dict[str, list[bytes]] = {"first": [], "second": []}

        async def member(name: str) -> None:
            async for delivery in broker.consume(sub, Prefetch(50)):
                got[name].append(delivery.message.body)
                await delivery.ack()

        consumer = broker._parts().consumer
        first = asyncio.create_task(member("first"))
        await eventually(lambda: broker.consuming(sub.queue), 30, "the first member joined")
        await broker.publish(sent)
        await eventually(lambda: len(got["first"]) == len(sent), 30, "the first member's share")
        second = asyncio.create_task(member("second"))
        await eventually(
            lambda: sum(s.joined for s in consumer.sessions) == 2, 30, "the second member joined"
        )
        first.cancel()  # a worker stopping closes its stream this way
        await asyncio.gather(first, return_exceptions=True)
        await eventually(lambda: len(consumer.sessions) == 1, 3, "the first member left")
        events = consumer.topology.names.events("test.item")

        def partitions() -> set[int]:
            return {
                tp.partition
                for s in consumer.sessions
                for tp in s.consumer.assignment()
                if tp.topic == events
            }

        await eventually(lambda: partitions() == {0, 1, 2}, 30, "the second member's partitions")
        later = [Message(type="test.item", body=b"later", subject=f"k{i}") for i in range(3)]
        await broker.publish(later)
        await eventually(lambda: len(got["second"]) >= 3, 30, "the later ones")
        await asyncio.sleep(0.5)  # anything delivered again would be here by now
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
    assert got["second"] == [b"later"] * 3, "handled ones came again: not committed"
