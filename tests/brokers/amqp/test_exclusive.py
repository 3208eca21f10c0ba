"""Exclusive subscriptions on RabbitMQ (``x-single-active-consumer``): one consumer
takes deliveries, the others wait; handovers keep the queue's order; existing queues
declared otherwise are refused with a clear error; credit changes without letting
the queue go."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator

import pytest
from aiormq.abc import AbstractConnection

from herald.broker import Delivery, Prefetch, Subscription
from herald.brokers import broker_from_url
from herald.brokers.amqp import AMQPBroker
from herald.errors import ConfigurationError
from herald.message import Message
from herald.testing import until

from .support import MANAGEMENT, SERVER, require_management, require_server

pytestmark = pytest.mark.amqp

EXCLUSIVE = Subscription("orders", "order.placed", exclusive=True)
HOLDER = """
import asyncio, sys
from herald.broker import Prefetch, Subscription
from herald.brokers import broker_from_url

async def main(url, count):
    broker = broker_from_url(url)
    await broker.connect()
    sub = Subscription("orders", "order.placed", exclusive=True)
    held = []
    async for delivery in broker.consume(sub, Prefetch(count)):
        held.append(delivery.message.body.decode())
        if len(held) == count:
            print(" ".join(held), flush=True)
            await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def orders(n: int, size: int = 0) -> list[Message]:
    return [Message(type="order.placed", body=str(i).encode().ljust(size)) for i in range(n)]


def bodies(deliveries: list[Delivery]) -> list[str]:
    return [d.message.body.decode().strip() for d in deliveries]


class Taker:
    """Pulls deliveries from one consumer into a list, settling nothing."""

    def __init__(self, broker: AMQPBroker, sub: Subscription, prefetch: Prefetch) -> None:
        self.items: list[Delivery] = []
        self._task = asyncio.create_task(self._pull(broker, sub, prefetch))

    async def _pull(self, broker: AMQPBroker, sub: Subscription, prefetch: Prefetch) -> None:
        async for delivery in broker.consume(sub, prefetch):
            self.items.append(delivery)

    async def count(self, n: int, timeout: float = 20.0) -> list[Delivery]:
        async def taken() -> int:
            if self._task.done():
                self._task.result()
            return len(self.items)

        await until(taken, lambda got: got >= n, timeout, f"{n} deliveries")
        return self.items[:n]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def second(url: str) -> AsyncIterator[AMQPBroker]:
    """Another broker object: another process, as far as the server can tell."""
    other = broker_from_url(url)
    assert isinstance(other, AMQPBroker)
    await other.connect()
    try:
        yield other
    finally:
        await other.close()


async def consumers(broker: AMQPBroker, sub: Subscription) -> int | None:
    [stats] = await broker.inspect_queues([sub.queue])
    return stats.consumers


async def test_an_existing_shared_queue_is_not_consumed_exclusively(
    broker: AMQPBroker, second: AMQPBroker, namespace: str
) -> None:
    shared = Subscription("orders", "order.placed")
    await broker.declare(shared)
    await broker.publish(orders(1))
    with pytest.raises(ConfigurationError) as refused:
        await second.declare(EXCLUSIVE)
    text = str(refused.value)
    assert f"queue {namespace}.orders.order.placed exists without x-single-active-consumer" in text
    assert "delete_queue" in text and "exclusive=False" in text
    stream = second.consume(EXCLUSIVE, Prefetch(1))
    with pytest.raises(ConfigurationError):
        await asyncio.wait_for(anext(stream), 10)
    [stats] = await broker.inspect_queues([shared.queue])
    assert (stats.depth, stats.consumers) == (1, 0), "nothing was consumed"


async def test_an_existing_exclusive_queue_is_not_consumed_as_shared(
    broker: AMQPBroker, second: AMQPBroker, namespace: str
) -> None:
    await broker.declare(EXCLUSIVE)
    with pytest.raises(ConfigurationError) as refused:
        await second.declare(Subscription("orders", "order.placed"))
    text = str(refused.value)
    assert f"queue {namespace}.orders.order.placed was declared exclusive" in text
    assert "exclusive=True" in text


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_a_killed_holder_is_replaced_at_once_and_what_it_held_comes_first(
    namespace: str, queue_type: str
) -> None:
    """The kernel closes a SIGKILLed process's socket and RabbitMQ drops its channels
    at once: the standby takes over long before a heartbeat (60 s here) could tell,
    with what the dead one held first, in the queue's order."""
    require_management()
    url = f"{SERVER}?namespace={namespace}&queue_type={queue_type}&management={MANAGEMENT}"
    broker = broker_from_url(url)
    assert isinstance(broker, AMQPBroker)
    await broker.connect()
    await broker.declare(EXCLUSIVE)
    await broker.publish(orders(10))
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        f"{url}&heartbeat=60",
        "3",
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    standby: Taker | None = None
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.split() == [b"0", b"1", b"2"], line
        standby = Taker(broker, EXCLUSIVE, Prefetch(10))
        await until(lambda: consumers(broker, EXCLUSIVE), lambda n: n == 2, 20, "2 attached")
        await asyncio.sleep(0.5)
        assert standby.items == [], "the standby takes nothing while the holder lives"
        child.kill()
        await child.wait()
        taken = await standby.count(1, timeout=15)
        while len(taken) < 10:
            for delivery in taken:
                if delivery.settlement is None:
                    await delivery.ack()
            taken = await standby.count(len(taken) + 1)
        await taken[-1].ack()
        assert bodies(taken) == [str(n) for n in range(10)]
        assert [d.attempt for d in taken] == [2, 2, 2] + [1] * 7, "the crash counts"
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        if standby is not None:
            await standby.close()
        try:
            await broker.destroy()
        finally:
            await broker.close()


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_a_stopping_holder_hands_over_once_it_settled(
    namespace: str, queue_type: str
) -> None:
    """The holder stops with three deliveries unsettled: the standby waits until it
    settled them, and what it released comes to the standby before anything newer.
    (The management API counts a quorum queue's waiting consumers; AMQP does not.)"""
    require_management()
    url = f"{SERVER}?namespace={namespace}&queue_type={queue_type}&management={MANAGEMENT}"
    first, second = broker_from_url(url), broker_from_url(url)
    assert isinstance(first, AMQPBroker) and isinstance(second, AMQPBroker)
    await first.connect()
    await second.connect()
    try:
        await first.declare(EXCLUSIVE)
        await first.publish(orders(6))
        holder = Taker(first, EXCLUSIVE, Prefetch(3))
        held = await holder.count(3)
        assert bodies(held) == ["0", "1", "2"]
        standby = Taker(second, EXCLUSIVE, Prefetch(10))
        await until(lambda: consumers(first, EXCLUSIVE), lambda n: n == 2, 20, "2 attached")
        await holder.close()
        await asyncio.sleep(0.5)
        assert standby.items == [], "the standby waits while the holder settles"
        await held[1].release()
        await held[0].ack()
        await asyncio.sleep(0.5)
        assert standby.items == [], "one is still being handled"
        await held[2].ack()
        taken = await standby.count(4)
        assert bodies(taken) == ["1", "3", "4", "5"], "the released one first, then on"
        for delivery in taken:
            await delivery.ack()
        await standby.close()
    finally:
        try:
            await first.destroy()
        finally:
            await first.close()
            await second.close()


async def test_a_lone_holder_that_stops_is_sent_nothing_more(
    broker: AMQPBroker, second: AMQPBroker
) -> None:
    """With nobody waiting, a stopping holder cancels at once, as on a shared queue:
    it is sent nothing more while it settles (which would go back redelivered and
    count an attempt in the next process)."""
    await broker.declare(EXCLUSIVE)
    await broker.publish(orders(6))
    holder = Taker(broker, EXCLUSIVE, Prefetch(2))
    held = await holder.count(2)
    await holder.close()
    for delivery in held:
        await delivery.ack()
    successor = Taker(second, EXCLUSIVE, Prefetch(10))
    taken = await successor.count(4)
    assert bodies(taken) == ["2", "3", "4", "5"]
    assert [d.attempt for d in taken] == [1, 1, 1, 1], "none was redelivered"
    for delivery in taken:
        await delivery.ack()
    await successor.close()


async def test_a_lone_exclusive_consumer_uses_its_whole_window(broker: AMQPBroker) -> None:
    """It moves at its first delivery, from a credit of one to what fits (eight)."""
    await broker.declare(EXCLUSIVE)
    await broker.publish(orders(10))
    taker = Taker(broker, EXCLUSIVE, Prefetch(messages=8))
    held = await taker.count(8)
    await asyncio.sleep(0.5)  # time for the server to push more, were it allowed to
    assert len(taker.items) == 8 and bodies(held) == [str(n) for n in range(8)]
    assert [d.attempt for d in held] == [1] * 8
    [stats] = await broker.inspect_queues([EXCLUSIVE.queue])
    assert stats.depth == 2, "eight held, none more sent ahead"
    for delivery in held:
        await delivery.ack()
    rest = await taker.count(10)
    assert bodies(rest[8:]) == ["8", "9"]
    for delivery in rest[8:]:
        await delivery.ack()
    await taker.close()


async def test_on_a_quorum_queue_the_credit_stays_what_it_subscribed_with(namespace: str) -> None:
    """A quorum queue puts what a closed channel held behind what it took back before,
    so an exclusive consumer never moves there: it keeps the credit for the largest
    bodies (64 MiB / 16 MiB = 4), in order, no message delivered twice."""
    require_server()
    broker = broker_from_url(f"{SERVER}?namespace={namespace}&queue_type=quorum")
    assert isinstance(broker, AMQPBroker)
    await broker.connect()
    try:
        await broker.declare(EXCLUSIVE)
        await broker.publish(orders(10))
        taker = Taker(broker, EXCLUSIVE, Prefetch(messages=8))
        for start in (0, 4):
            held = (await taker.count(start + 4))[start:]
            await asyncio.sleep(0.5)
            assert len(taker.items) == start + 4, "four promised"
            assert bodies(held) == [str(n) for n in range(start, start + 4)]
            assert [d.attempt for d in held] == [1] * 4
            for delivery in held:
                await delivery.ack()
        await taker.close()
    finally:
        try:
            await broker.destroy()
        finally:
            await broker.close()


async def test_with_a_standby_waiting_the_holder_still_gets_its_whole_window(
    broker: AMQPBroker, second: AMQPBroker
) -> None:
    """Both start with a credit of one: at its first delivery the holder moves to a
    new channel (handing the queue to the standby, which does the same), and one of
    them ends up holding four, in order, the other nothing."""
    await broker.declare(EXCLUSIVE)
    one = Taker(broker, EXCLUSIVE, Prefetch(4))
    await until(lambda: consumers(broker, EXCLUSIVE), lambda n: n == 1, 20, "1 attached")
    other = Taker(second, EXCLUSIVE, Prefetch(4))
    await until(lambda: consumers(broker, EXCLUSIVE), lambda n: n == 2, 20, "2 attached")
    await broker.publish(orders(6))
    await until(
        lambda: asyncio.sleep(0, len(one.items) + len(other.items)), lambda n: n >= 4, 20, "4"
    )
    await asyncio.sleep(0.5)
    holder, idle = (one, other) if one.items else (other, one)
    assert idle.items == [] and bodies(holder.items) == ["0", "1", "2", "3"]
    for delivery in holder.items[:4]:
        await delivery.ack()
    rest = await holder.count(6)
    assert bodies(rest[4:]) == ["4", "5"] and idle.items == []
    for delivery in rest[4:]:
        await delivery.ack()
    await one.close()
    await other.close()


async def test_a_credit_changed_in_place_keeps_the_order(
    broker: AMQPBroker, caplog: pytest.LogCaptureFixture, raw: AbstractConnection
) -> None:
    """Larger bodies come while the consumer holds deliveries: it subscribes anew
    behind itself and cancels the old subscription (nobody else waits), and every
    message still comes once, in order."""
    caplog.set_level(logging.DEBUG, logger="herald.amqp")
    await broker.declare(EXCLUSIVE)
    await broker.publish(orders(2, size=512) + orders(8, size=2048)[2:])
    stream = broker.consume(EXCLUSIVE, Prefetch(messages=8, bytes=8 * 1024))
    order: list[Delivery] = [await asyncio.wait_for(anext(stream), 10)]
    held = [order[0]]
    while len(order) < 8:
        delivery = await asyncio.wait_for(anext(stream), 10)
        order.append(delivery)
        held.append(delivery)
        await held.pop(0).ack()
    for delivery in held:
        await delivery.ack()
    await stream.aclose()
    assert bodies(order) == [str(n) for n in range(8)]
    assert [d.attempt for d in order] == [1] * 8
    assert any("in place of" in r.getMessage() for r in caplog.records), "switched in place"
