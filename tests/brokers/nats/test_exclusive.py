"""Exclusive queues on ``nats://``: one holder at a time through the live bucket,
standbys counted, a killed holder's successor taking over in order within the bound,
a holder cut off losing the queue, and queues that existed before being exclusive."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

import herald
from herald.broker import Delivery, Prefetch, Subscription
from herald.brokers.nats import NATSBroker
from herald.brokers.nats.exclusive import MARGIN, POLL
from herald.brokers.nats.state import LIVE_TTL
from herald.errors import BrokerError, ConfigurationError
from herald.testing import eventually
from herald.testing.events import Tick

from .support import (
    Relay,
    connected,
    counts_become,
    nats_url,
    next_delivery,
    number,
    require_nats,
    tick,
)

pytestmark = pytest.mark.nats
LEDGER = Subscription("ledger", "employee.created", exclusive=True)


async def pair(url: str) -> tuple[NATSBroker, NATSBroker]:
    """Two brokers on their own connections: two processes of one service."""
    require_nats()
    return await connected(url), await connected(url)


async def close_all(*brokers: NATSBroker) -> None:
    await brokers[0].destroy()
    for broker in brokers:
        await broker.close()


async def test_one_holder_at_a_time_and_the_standby_waits_for_its_settlements() -> None:
    first_broker, second_broker = await pair(nats_url(ack_wait="30"))
    try:
        await first_broker.declare(LEDGER)
        await first_broker.publish([tick(n) for n in range(6)])
        first = first_broker.consume(LEDGER, Prefetch(2))
        d0, d1 = await next_delivery(first), await next_delivery(first)
        second = second_broker.consume(LEDGER, Prefetch(10))
        waiting = asyncio.ensure_future(anext(second))
        await counts_become(first_broker, LEDGER.queue, (4, 2, 2))  # the standby counts
        await d0.ack()
        d2 = await next_delivery(first)
        await first.aclose()  # it stops, still holding d1 and d2
        await asyncio.sleep(1.5)
        assert not waiting.done(), "the standby took over before the holder settled"
        await counts_become(first_broker, LEDGER.queue, (3, 2, 1))
        await d1.ack()
        await d2.ack()
        taken = [await asyncio.wait_for(waiting, 10)]
        taken += [await next_delivery(second) for _ in range(2)]
        assert [(number(d), d.attempt) for d in taken] == [(3, 1), (4, 1), (5, 1)]
        for delivery in taken:
            await delivery.ack()
        await second.aclose()
    finally:
        await close_all(first_broker, second_broker)


async def test_a_stopped_holder_with_nothing_unsettled_hands_over_at_once() -> None:
    first_broker, second_broker = await pair(nats_url(ack_wait="30"))
    try:
        await first_broker.declare(LEDGER)
        await first_broker.publish([tick(n) for n in range(3)])
        first = first_broker.consume(LEDGER, Prefetch(1))
        await (await next_delivery(first)).ack()
        second = second_broker.consume(LEDGER, Prefetch(10))
        waiting = asyncio.ensure_future(anext(second))
        await counts_become(first_broker, LEDGER.queue, (1, 1, 2))  # one waits in its feed
        await first.aclose()  # gives back what it had received but not handed out
        taken = await asyncio.wait_for(waiting, 10)  # no ack_wait to wait out
        assert (number(taken), taken.attempt) == (1, 2)
        await taken.ack()
        following = await next_delivery(second)
        assert (number(following), following.attempt) == (2, 1)
        await following.ack()
        await second.aclose()
    finally:
        await close_all(first_broker, second_broker)


async def test_a_killed_holders_successor_takes_over_in_order_within_the_bound(
    tmp_path: Path,
) -> None:
    require_nats()
    ack_wait = 3.0
    url = nats_url(ack_wait=str(int(ack_wait)))
    service = f"killed{uuid.uuid4().hex[:6]}"
    queue = Subscription(service, Tick.event_type(), exclusive=True)
    bound = LIVE_TTL + POLL + ack_wait + MARGIN
    out = tmp_path / "child.out"
    broker = await connected(url)
    child: asyncio.subprocess.Process | None = None
    try:
        async with herald.connect(url) as bus:
            await bus.broker.declare(queue)
            await bus.publish_many(Tick(n=n) for n in range(30))
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "herald.testing.child", url, service, os.fspath(out),
            "--pause-after", "5", "--exclusive", stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await eventually(lambda: out.with_suffix(".paused").exists(), 60, "the child")
        successor = broker.consume(queue, Prefetch(64))
        first = asyncio.ensure_future(anext(successor))
        await counts_become(broker, queue.queue, (17, 8, 2))  # it holds its prefetch of 8
        assert not first.done(), "the standby took something while the child held the queue"
        child.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await child.wait()
        taken: list[Delivery] = [await asyncio.wait_for(first, bound + 10)]
        took = time.monotonic() - killed
        while len({number(d) for d in taken}) < 25:
            taken.append(await next_delivery(successor))
        assert took <= bound + 3, f"took over {took:.1f}s after the kill, bound {bound:.1f}s"
        handled = [int(line) for line in out.read_text().split()]
        assert handled == [0, 1, 2, 3, 4]
        numbers = [number(d) for d in taken]
        assert numbers == sorted(numbers), f"not in publish order: {numbers}"
        assert set(range(5, 30)) <= set(numbers) <= set(range(4, 30))
        redelivered = [number(d) for d in taken if d.attempt > 1]
        assert len(redelivered) >= 8 and redelivered == numbers[: len(redelivered)], (
            "what the killed holder held comes first"
        )
        for delivery in taken:
            await delivery.ack()
        await counts_become(broker, queue.queue, (0, 0, 1))  # nothing comes twice
        await successor.aclose()
    finally:
        if child is not None and child.returncode is None:
            child.kill()
            await child.wait()
        await close_all(broker)


async def test_a_holder_cut_off_loses_the_queue_and_its_leases(relay: Relay) -> None:
    namespace = f"tn{uuid.uuid4().hex[:8]}"
    holder = await connected(nats_url(port=relay.port, namespace=namespace, ack_wait="2"))
    standby = await connected(nats_url(namespace=namespace, ack_wait="2"))
    try:
        await standby.declare(LEDGER)
        await standby.publish([tick(n) for n in range(3)])
        held_stream = holder.consume(LEDGER, Prefetch(1))
        held = await next_delivery(held_stream)
        waiting_stream = standby.consume(LEDGER, Prefetch(4))
        waiting = asyncio.ensure_future(anext(waiting_stream))
        await counts_become(standby, LEDGER.queue, (2, 1, 2))
        await relay.cut()  # the holder can renew neither its hold nor its lease
        taken = await asyncio.wait_for(waiting, LIVE_TTL + POLL + 2 + MARGIN + 10)
        assert (number(taken), taken.attempt) == (0, 2), "what it held comes back first"
        with pytest.raises(BrokerError, match="lost the exclusive hold"):
            await asyncio.wait_for(anext(held_stream), 30)
        assert held.settlement is None
        for expected in (0, 1, 2):
            delivery = taken if expected == 0 else await next_delivery(waiting_stream)
            assert number(delivery) == expected
            await delivery.ack()
        await waiting_stream.aclose()
        await held_stream.aclose()
    finally:
        await relay.restore()
        await close_all(standby, holder)


async def test_an_existing_queue_becomes_exclusive_in_place(
    broker: NATSBroker, caplog: pytest.LogCaptureFixture
) -> None:
    plain = Subscription(LEDGER.service, LEDGER.name)
    await broker.declare(plain)
    await broker.publish([tick(1)])
    with caplog.at_level(logging.WARNING, logger="herald.brokers.nats"):
        await broker.declare(LEDGER)
    assert "existed without exclusive=True" in caplog.text
    stream = broker.consume(LEDGER, Prefetch(4))
    delivery = await next_delivery(stream)
    assert number(delivery) == 1, "it keeps what was waiting"
    await delivery.ack()
    await stream.aclose()
    with pytest.raises(ConfigurationError, match="is exclusive on NATS"):
        await broker.declare(plain)
    with pytest.raises(ConfigurationError, match="nats consumer rm"):
        await anext(broker.consume(plain, Prefetch(1)))
    assert [s.queue for s in await broker.inspect_queues()] == [LEDGER.queue]
