"""RabbitMQ backfill (``retain=``): the history stream, the exact cut, resuming, refusal.

The conformance scenario ``backfill_replays_history_once_then_live`` covers the
story; these cover what is RabbitMQ's own: events published while the queue is being
created are each delivered once and in order per key, an interrupted backfill is
done again from its record, replicas backfill once, and without ``retain=`` the
call fails naming the option.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

import herald
from herald.broker import Delivery, Prefetch, Subscription
from herald.brokers import broker_from_url
from herald.brokers.amqp import AMQPBroker
from herald.brokers.amqp.history import History
from herald.capabilities import RetainedHistory
from herald.errors import BrokerError, CapabilityError
from herald.message import Message

from .conftest import destroy
from .support import next_of

pytestmark = pytest.mark.amqp

SUB = Subscription("cards", "employee.created", ("employee.created",))
KEYS = ("k0", "k1", "k2")


def events(seqs: range, type: str = "employee.created") -> list[Message]:
    return [Message(type=type, body=str(s).encode(), subject=KEYS[s % len(KEYS)]) for s in seqs]


@contextlib.asynccontextmanager
async def retaining(url: str, count: int = 1) -> AsyncIterator[list[AMQPBroker]]:
    brokers = [broker_from_url(f"{url}&retain=1h") for _ in range(count)]
    try:
        for broker in brokers:
            assert isinstance(broker, AMQPBroker)
            await broker.connect()
        yield [b for b in brokers if isinstance(b, AMQPBroker)]
    finally:
        try:
            await destroy(f"{url}&retain=1h")
        finally:
            for broker in brokers:
                await broker.close()


async def take(broker: AMQPBroker, count: int) -> list[Delivery]:
    """``count`` deliveries of SUB, each acked; then none more for a moment."""
    taken: list[Delivery] = []
    async with contextlib.aclosing(broker.consume(SUB, Prefetch(50))) as stream:
        for _ in range(count):
            delivery = await next_of(stream)
            taken.append(delivery)
            await delivery.ack()
        with pytest.raises(TimeoutError):
            await next_of(stream, timeout=0.5)
    return taken


def per_key(deliveries: list[Delivery]) -> dict[str, list[int]]:
    order: dict[str, list[int]] = defaultdict(list)
    for delivery in deliveries:
        order[str(delivery.message.subject)].append(int(delivery.message.body))
    return dict(order)


async def test_without_retain_backfill_is_refused_naming_the_option(url: str) -> None:
    broker = broker_from_url(url)
    assert isinstance(broker, RetainedHistory)
    await broker.connect()
    try:
        with pytest.raises(CapabilityError, match=r"\?retain="):
            await broker.backfill(SUB)
        quorum = broker_from_url(f"{url}&retain=1h&queue_type=quorum")
        assert isinstance(quorum, AMQPBroker)
        exclusive = Subscription("cards", "employee.created", ("employee.*",), exclusive=True)
        with pytest.raises(CapabilityError, match="queue_type=classic"):
            await quorum.backfill(exclusive)  # refused before connecting
        svc = herald.Service("cards")

        @svc.on("employee.created", backfill=True)
        async def handle(event: Any) -> None: ...

        async with herald.connect(url) as bus:
            with pytest.raises(CapabilityError, match=r"retain"):
                await bus.start(svc)
    finally:
        await destroy(url)
        await broker.close()


async def test_since_replays_from_that_moment(url: str) -> None:
    async with retaining(url) as (broker,):
        await broker.publish(events(range(3)))
        since = datetime.now(UTC)  # the stream is searched from a second before
        await broker.publish(events(range(3, 5)))
        assert await broker.backfill(SUB, since) == 2
        assert [int(d.message.body) for d in await take(broker, 2)] == [3, 4]


async def test_events_published_during_the_backfill_come_once_in_order_per_key(url: str) -> None:
    async with retaining(url, 2) as (broker, publisher):
        await publisher.publish(events(range(30)))
        await publisher.publish(events(range(5), "employee.deleted"))  # not for SUB
        live, done = 30, asyncio.Event()

        async def publish_live() -> None:  # each batch awaited: each key's order is given
            nonlocal live
            while not done.is_set() or live < 90:
                await publisher.publish(events(range(live, live + 3)))
                live += 3

        publishing = asyncio.ensure_future(publish_live())
        await asyncio.sleep(0.05)  # the publishes straddle the binding and the cut
        count = await broker.backfill(SUB)
        done.set()
        await publishing
        assert 30 < count < live, f"history: before the queue, and some during: {count}"
        taken = await take(broker, live)
        assert per_key(taken) == {k: list(range(i, live, 3)) for i, k in enumerate(KEYS)}
        assert {d.attempt for d in taken} == {1}, "the cut's reading is no attempt"
        assert await broker.backfill(SUB) == 0, "a restart replays nothing"


async def test_an_interrupted_backfill_is_done_again_and_replicas_backfill_once(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with retaining(url, 2) as (one, two):
        await one.publish(events(range(6)))
        copy = History._copy

        async def crash(self: History, *args: Any) -> int:
            await copy(self, *args)  # the history is copied, the record not deleted
            raise RuntimeError("crash")

        monkeypatch.setattr(History, "_copy", crash)
        with pytest.raises(BrokerError, match="crash"):
            await one.backfill(SUB)
        monkeypatch.setattr(History, "_copy", copy)
        await one.publish(events(range(6, 9)))  # live: the queue was bound
        counts = await asyncio.gather(one.backfill(SUB), two.backfill(SUB))
        assert sorted(counts) == [0, 6], f"done again once, by one replica: {counts}"
        taken = await take(one, 9)
        assert per_key(taken) == {k: list(range(i, 9, 3)) for i, k in enumerate(KEYS)}
