"""The in-process broker's own behaviour: names, fresh hubs, inspection, closing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

import herald
from herald.broker import Prefetch, Subscription
from herald.brokers import broker_from_url
from herald.brokers.memory import MemoryBroker


def name() -> str:
    return f"mem-{uuid.uuid4().hex[:8]}"


async def test_brokers_of_one_url_share_queues_and_fresh_starts_empty() -> None:
    hub = name()
    sub = Subscription("svc", "a.b")
    async with MemoryBroker.from_url(f"memory://{hub}") as first:
        await first.declare(sub)
        await first.publish([herald.Message(type="a.b", body=b"1")])
    async with broker_from_url(f"memory://{hub}") as second:
        assert isinstance(second, MemoryBroker)
        assert [s.depth for s in await second.inspect_queues()] == [1]
    async with broker_from_url(f"memory://{hub}?fresh=true") as fresh:
        assert isinstance(fresh, MemoryBroker)
        assert await fresh.inspect_queues() == []


def test_unknown_query_parameters_are_refused() -> None:
    with pytest.raises(herald.BrokerURLError) as info:
        broker_from_url("memory://x?freshh=1")
    assert info.value.part == "query parameter 'freshh'"


async def test_a_closed_broker_refuses_publishes() -> None:
    broker = MemoryBroker(name())
    await broker.connect()
    await broker.close()
    with pytest.raises(herald.BrokerError, match="closed"):
        await broker.publish([herald.Message(type="a.b", body=b"")])


async def test_inspection_counts_waiting_delayed_in_flight_and_consumers() -> None:
    sub = Subscription("svc", "a.b")
    async with MemoryBroker(name()) as broker:
        await broker.declare(sub)
        await broker.publish([herald.Message(type="a.b", body=b"%d" % i) for i in range(3)])
        stream = broker.consume(sub, Prefetch(2))
        first = await anext(stream)
        second = await anext(stream)
        await second.retry(60, {})
        (stats,) = await broker.inspect_queues([sub.queue, "unknown.queue"])
        assert (stats.depth, stats.in_flight, stats.consumers) == (2, 1, 1)
        assert stats.oldest_age is not None and stats.oldest_age >= 0
        await first.ack()
        await stream.aclose()
        (stats,) = await broker.inspect_queues()
        assert (stats.depth, stats.in_flight, stats.consumers) == (2, 0, 0)


async def test_dead_letters_past_their_retention_are_dropped() -> None:
    hub = name()
    sub = Subscription("svc", "a.b")
    old = herald.DeadLetterReason(
        sub.queue, "E", "old", 1, last_failure=datetime(2020, 1, 1, tzinfo=UTC)
    )
    async with MemoryBroker.from_url(f"memory://{hub}?dlq_retention=3600") as broker:
        await broker.declare(sub)
        await broker.publish(
            [herald.Message(type="a.b", body=b"1"), herald.Message(type="a.b", body=b"2")]
        )
        stream = broker.consume(sub, Prefetch(2))
        first, second = await anext(stream), await anext(stream)
        await first.dead_letter(old)
        await second.dead_letter(herald.DeadLetterReason(sub.queue, "E", "new", 1))
        await stream.aclose()
        assert [letter.reason.error_message for letter in await broker.dead_letters("svc")] == [
            "new"
        ]
    async with MemoryBroker.from_url(f"memory://{hub}?dlq_retention=0") as keeper:
        assert len(await keeper.dead_letters("svc")) == 1
