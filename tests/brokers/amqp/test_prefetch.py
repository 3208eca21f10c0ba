"""Prefetch by bytes on a broker that pushes and counts messages only.

20 bodies of 2 MiB with a byte bound of 4 MiB: never more than two are unsettled
at once, and the server is never given credit for more than that (the queue keeps
the rest ready).
"""

from __future__ import annotations

import asyncio

import pytest

import herald
from herald.broker import Prefetch, Subscription
from herald.brokers.amqp import AMQPBroker
from herald.message import Message

from .support import next_of

pytestmark = pytest.mark.amqp

MiB = 1024 * 1024
COUNT = 20


def bodies() -> list[Message]:
    return [Message(type="blob.stored", body=bytes([n]) * (2 * MiB)) for n in range(COUNT)]


async def test_handlers_never_hold_more_than_the_byte_bound(url: str) -> None:
    service = herald.Service("bytes", concurrency=8, prefetch=64, prefetch_bytes=4 * MiB)
    running: list[int] = []
    most = {"messages": 0, "bytes": 0}
    handled: list[int] = []
    done = asyncio.Event()

    @service.on("blob.stored")
    async def store(message: herald.Message) -> None:
        running.append(len(message.body))
        most["messages"] = max(most["messages"], len(running))
        most["bytes"] = max(most["bytes"], sum(running))
        await asyncio.sleep(0.05)
        running.remove(len(message.body))
        handled.append(message.body[0])
        if len(handled) == COUNT:
            done.set()

    async with herald.connect(url) as bus:
        try:
            worker = await bus.start(service)
            await bus.broker.publish(bodies())
            await asyncio.wait_for(done.wait(), 60)
            await worker.stop()
        finally:
            await bus.broker.destroy()
    assert sorted(handled) == list(range(COUNT))
    assert most == {"messages": 2, "bytes": 4 * MiB}, most


async def test_the_server_gets_credit_for_the_byte_bound_only(broker: AMQPBroker) -> None:
    sub = Subscription("bytes", "blob.stored")
    await broker.declare(sub)
    await broker.publish(bodies())
    stream = broker.consume(sub, Prefetch(messages=64, bytes=4 * MiB))
    first = await next_of(stream)
    await first.ack()  # the first size seen: the credit goes from one to two
    held = [await next_of(stream), await next_of(stream)]
    await asyncio.sleep(0.5)  # time for the server to push more, were it allowed to
    [stats] = await broker.inspect_queues([sub.queue])
    assert stats.depth == COUNT - 3, "three delivered, none more sent ahead"
    seen = [first.message.body[0]]
    pending = list(held)
    while pending:
        delivery = pending.pop(0)
        seen.append(delivery.message.body[0])
        await delivery.ack()
        if len(seen) + len(pending) < COUNT:
            pending.append(await next_of(stream))
    await stream.aclose()
    assert sorted(seen) == list(range(COUNT))


async def test_large_bodies_after_small_ones_stay_within_the_window(url: str) -> None:
    service = herald.Service("mixed", concurrency=64, prefetch=64, prefetch_bytes=4 * MiB)
    running: list[int] = []
    most = {"large": 0, "bytes": 0}
    handled: list[int] = []
    small = [Message(type="blob.stored", body=b"s" * 1024) for _ in range(100)]
    done = asyncio.Event()

    @service.on("blob.stored")
    async def store(message: herald.Message) -> None:
        running.append(len(message.body))
        most["large"] = max(most["large"], sum(size > MiB for size in running))
        most["bytes"] = max(most["bytes"], sum(running))
        await asyncio.sleep(0.05)
        running.remove(len(message.body))
        handled.append(len(message.body))
        if len(handled) == len(small) + COUNT:
            done.set()

    async with herald.connect(url) as bus:
        try:
            worker = await bus.start(service)
            await bus.broker.publish(small + bodies())  # the credit is 64 when they come
            await asyncio.wait_for(done.wait(), 60)
            await worker.stop()
        finally:
            await bus.broker.destroy()
    assert most["large"] == 2, most
    assert most["bytes"] < 4 * MiB + 2 * MiB, "the bound, plus at most one body"


async def test_a_consumer_holding_deliveries_takes_more_while_the_window_has_room(
    broker: AMQPBroker,
) -> None:
    """A consumer starts with a credit of four (16 MiB bodies assumed); with small
    bodies it may hold eight. It must get all eight without settling any: it used to
    cancel and wait until what it held left room for the whole new credit."""
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    await broker.publish([Message(type="job.created", body=str(n).encode()) for n in range(10)])
    stream = broker.consume(sub, Prefetch(messages=8))
    held = [await next_of(stream) for _ in range(8)]
    assert [d.message.body for d in held] == [str(n).encode() for n in range(8)]
    await asyncio.sleep(0.5)  # time for the server to push more, were it allowed to
    [stats] = await broker.inspect_queues([sub.queue])
    assert stats.depth == 2, "eight held, none more sent ahead"
    await held[0].ack()
    ninth = await next_of(stream)
    assert ninth.message.body == b"8"
    for delivery in [*held[1:], ninth]:
        await delivery.ack()
    await stream.aclose()


async def test_a_transient_queue_keeps_a_consumer_while_the_credit_changes(
    broker: AMQPBroker,
) -> None:
    """Larger bodies after small ones make the consumer subscribe anew: it subscribes
    before it cancels, for a transient queue goes with its last consumer (and what
    was published to it with the queue)."""
    sub = Subscription("tail", "blob", ("blob.stored",), durable=False)
    await broker.declare(sub)
    small = [Message(type="blob.stored", body=b"s" * 1024) for _ in range(3)]
    await broker.publish(small + bodies()[:6])
    stream = broker.consume(sub, Prefetch(messages=64, bytes=4 * MiB))
    seen = []
    for _ in range(9):
        delivery = await next_of(stream)
        seen.append(len(delivery.message.body))
        await delivery.ack()
    await stream.aclose()
    assert seen == [1024] * 3 + [2 * MiB] * 6
