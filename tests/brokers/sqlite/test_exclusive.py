"""Exclusive subscriptions: one consume loop at a time holds the queue, the others
stand by (and count as consumers); a holder that dies loses the queue at once (its pid
gone from this host) or after ``lease`` (its heartbeat stopped), and what it held is
delivered again before anything newer; a holder that stops keeps the queue until what
it handed out is settled; queues declared without exclusivity become exclusive as
soon as their consumers ask for it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from pathlib import Path

import pytest

from herald.broker import Delivery, Prefetch, Subscription
from herald.brokers.sqlite import SQLiteBroker
from herald.errors import BrokerError
from herald.testing import eventually

from .helpers import SUB, Child, connected, foreign_writer, messages, stats, url_for
from .test_space import write_first_layout

EXCLUSIVE = Subscription(SUB.service, SUB.name, SUB.patterns, exclusive=True)

EXCLUSIVE_HOLDER = """
import asyncio, sys
from herald.broker import Prefetch, Subscription
from herald.brokers import broker_from_url

async def main():
    broker = broker_from_url(sys.argv[1])
    await broker.connect()
    hold = int(sys.argv[2])
    sub = Subscription("billing", "invoice.created", ("invoice.*",), exclusive=True)
    stream, held = broker.consume(sub, Prefetch(messages=hold)), []
    async for delivery in stream:
        held.append(delivery)
        if len(held) == hold:
            break
    if sys.argv[3:] == ["stop"]:
        await stream.aclose()  # the loop stops; its deliveries stay unsettled
    print("holding", *(d.message.id for d in held), flush=True)
    await asyncio.to_thread(sys.stdin.readline)

asyncio.run(main())
"""
"""``python -c EXCLUSIVE_HOLDER URL N [stop]``: hold :data:`EXCLUSIVE`'s queue with N
deliveries unsettled (``stop``: then close the loop, keeping them unsettled), print
``holding <ids>`` and wait to be killed."""


class Taker:
    """One consume loop pulling deliveries into a list, settling nothing."""

    def __init__(
        self, broker: SQLiteBroker, prefetch: int = 100, sub: Subscription = EXCLUSIVE
    ) -> None:
        self.items: list[Delivery] = []
        self._stream = broker.consume(sub, Prefetch(messages=prefetch))
        self._task = asyncio.create_task(self._pull())

    async def _pull(self) -> None:
        async for delivery in self._stream:
            self.items.append(delivery)

    async def count(self, n: int, timeout: float = 30) -> list[Delivery]:
        await eventually(lambda: len(self.items) >= n or self._task.done(), timeout, f"{n}")
        if self._task.done():
            self._task.result()
        return self.items[:n]

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._stream.aclose()


async def standing_by(broker: SQLiteBroker, consumers: int = 2) -> None:
    async def attached() -> bool:
        return (await stats(broker)).consumers == consumers

    await eventually(attached, what=f"{consumers} consumers attached")


async def test_one_holder_at_a_time_and_standbys_count_as_consumers(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with connected(path) as one, connected(path) as two:
        await one.declare(EXCLUSIVE)
        sent = messages(6)
        await one.publish(sent)
        first = Taker(one, prefetch=2)
        held = await first.count(2)
        second = Taker(two)
        await standing_by(one)
        await asyncio.sleep(1)  # several wake-ups and polls of the standby
        assert second.items == [], "the standby got deliveries"
        found = await stats(one)
        assert (found.depth, found.in_flight, found.consumers) == (4, 2, 2)
        for delivery in held:
            await delivery.ack()
        await first.count(4)
        await asyncio.sleep(0.5)
        assert second.items == [], "the standby got deliveries while the holder held"
        for delivery in first.items[2:]:
            await delivery.ack()
        await first.close()
        taken = await second.count(2)
        assert [d.message.id for d in taken] == [m.id for m in sent[4:]]
        for delivery in taken:
            await delivery.ack()
        await second.close()


@pytest.mark.parametrize("death", ["sigkill", "sigkill-known-before", "sigstop"])
async def test_a_dead_holders_deliveries_come_first_to_its_successor(
    tmp_path: Path, death: str
) -> None:
    """SIGKILL: the pid is gone, the standby takes over at once (a lease of 600s and
    a poll of 60s cannot be what does it), also when the standby's broker was already
    consuming before the holder started. SIGSTOP: the process hangs, its heartbeat
    stops, and the standby takes over ``lease`` (1s) later."""
    path = tmp_path / "h.db"
    options: dict[str, object] = {"lease": 1} if death == "sigstop" else {"lease": 600, "poll": 60}
    url = url_for(path, **options)
    async with connected(path, **options) as broker:
        await broker.declare(EXCLUSIVE)
        sent = messages(10)
        await broker.publish(sent)
        if death == "sigkill-known-before":  # this broker checked the others already
            other = Taker(broker, sub=Subscription("billing", "other"))

            async def joined() -> bool:
                found = await broker.inspect_queues(["billing.other"])
                return [q.consumers for q in found] == [1]

            await eventually(joined, what="this broker consuming")
        child = Child(EXCLUSIVE_HOLDER, url, "3")
        try:
            held = (await child.line()).split()[1:]
            assert held == [m.id for m in sent[:3]]
            standby = Taker(broker)
            await standing_by(broker)
            assert standby.items == []
            child.process.send_signal(signal.SIGSTOP if death == "sigstop" else signal.SIGKILL)
            taken = await standby.count(10)
            assert [d.message.id for d in taken] == [m.id for m in sent]
            assert [d.attempt for d in taken] == [2] * 3 + [1] * 7
            for delivery in taken:
                await delivery.ack()
            await standby.close()
            if death == "sigkill-known-before":
                await other.close()
        finally:
            child.process.send_signal(signal.SIGCONT)
            child.kill()


async def test_a_holder_that_stops_keeps_the_queue_until_its_deliveries_are_settled(
    tmp_path: Path,
) -> None:
    """The runtime stops consuming before its handlers finish and gives back what
    they did not start: the successor gets that first, in publish order."""
    path = tmp_path / "h.db"
    async with connected(path) as one, connected(path, poll=60) as two:
        await one.declare(EXCLUSIVE)
        sent = messages(6)
        await one.publish(sent)
        first = Taker(one, prefetch=3)
        a, b, c = await first.count(3)
        await first.close()
        second = Taker(two)
        await standing_by(one, consumers=1)
        await asyncio.sleep(1)
        assert second.items == [], "the successor took over while deliveries were in flight"
        await b.release()
        await a.ack()
        assert second.items == []
        await c.ack()  # the last one: the queue is free, the successor is woken
        taken = await second.count(4)
        assert [d.message.id for d in taken] == [sent[1].id, *(m.id for m in sent[3:])]
        for delivery in taken:
            await delivery.ack()
        await second.close()


async def test_a_delivery_whose_lease_ran_out_comes_first_after_a_takeover(
    tmp_path: Path,
) -> None:
    """The holder's loop stops, then its ack fails (the database stays busy): the row
    stays leased to it until ``lease`` runs out, and the successor, standing by all
    along, claims it before anything newer."""
    path = tmp_path / "h.db"
    async with connected(path, lease=1, timeout=0.2) as one, connected(path, lease=1) as two:
        await one.declare(EXCLUSIVE)
        sent = messages(4)
        await one.publish(sent)
        first = Taker(one, prefetch=1)
        (stuck,) = await first.count(1)
        second = Taker(two)
        await standing_by(one)
        await first.close()
        with foreign_writer(path), pytest.raises(BrokerError):
            await asyncio.wait_for(stuck.ack(), 10)
        taken = await second.count(4)
        assert [d.message.id for d in taken] == [m.id for m in sent]
        assert taken[0].attempt == 2
        for delivery in taken:
            await delivery.ack()
        await second.close()


async def test_a_takeover_makes_expired_leases_ready_in_its_own_transaction(
    tmp_path: Path,
) -> None:
    """The holder stopped its loop with a delivery unsettled and then hung; that
    delivery's lease (1s, the holder's setting) ran out, and no check has made it
    ready since (this broker's come every 60s). The successor takes over and claims
    it first, in the takeover's transaction, not after newer ones."""
    path = tmp_path / "h.db"
    async with connected(path, lease=600, poll=60) as broker:
        await broker.declare(EXCLUSIVE)
        sent = messages(4)
        await broker.publish(sent)
        other = Taker(broker, sub=Subscription("billing", "other"))  # checked once, now

        async def joined() -> bool:
            found = await broker.inspect_queues(["billing.other"])
            return [q.consumers for q in found] == [1]

        await eventually(joined, what="this broker consuming")
        child = Child(EXCLUSIVE_HOLDER, url_for(path, lease=1), "1", "stop")
        try:
            assert (await child.line()).split()[1:] == [sent[0].id]
            child.process.send_signal(signal.SIGSTOP)
            await asyncio.sleep(1.5)  # the lease of the held delivery runs out
            successor = Taker(broker)
            taken = await successor.count(4)
            assert [d.message.id for d in taken] == [m.id for m in sent]
            assert taken[0].attempt == 2
            for delivery in taken:
                await delivery.ack()
            await successor.close()
            await other.close()
        finally:
            child.process.send_signal(signal.SIGCONT)
            child.kill()


async def test_a_loop_that_could_not_let_go_loses_the_queue_all_the_same(
    tmp_path: Path,
) -> None:
    """Letting go fails (the database stays busy as the loop stops); the holder's
    broker lives on and frees the queue at its next check, waking the standby (whose
    own poll of 60s cannot be what does it)."""
    path = tmp_path / "h.db"
    async with connected(path, timeout=0.2) as one, connected(path, poll=60) as two:
        await one.declare(EXCLUSIVE)
        await one.publish(messages(1))
        first = Taker(one)
        (held,) = await first.count(1)
        await held.ack()
        second = Taker(two)
        await standing_by(one)
        with foreign_writer(path):
            await first.close()
        later = messages(1)
        await one.publish(later)
        taken = await second.count(1)
        assert taken[0].message.id == later[0].id
        await taken[0].ack()
        await standing_by(one, consumers=1)  # the listing was written again too
        await second.close()


async def test_loops_of_one_broker_take_turns_at_once(tmp_path: Path) -> None:
    async with connected(tmp_path / "h.db", poll=60) as broker:
        await broker.declare(EXCLUSIVE)
        await broker.publish(messages(4))
        first = Taker(broker, prefetch=2)
        held = await first.count(2)
        second = Taker(broker)
        await asyncio.sleep(0.5)
        assert second.items == []
        assert (await stats(broker)).consumers == 1, "one broker is one consumer"
        await first.close()  # its deliveries are its broker's: no need to wait for them
        taken = await second.count(2)
        for delivery in [*held, *taken]:
            await delivery.ack()
        await second.close()


async def test_a_queue_declared_without_exclusivity_becomes_exclusive(tmp_path: Path) -> None:
    """Exclusivity is how a queue is consumed, not part of it: a queue declared (and
    filled) without it is taken in turns as soon as its consumers ask for it, while a
    consumer that does not ask is not bound by the holder."""
    path = tmp_path / "h.db"
    async with connected(path) as one, connected(path) as two, connected(path) as three:
        await one.declare(SUB)
        sent = messages(6)
        await one.publish(sent)
        first = Taker(one, prefetch=2)
        await first.count(2)
        second = Taker(two)
        await standing_by(one)
        await asyncio.sleep(0.5)
        assert second.items == []
        stream = three.consume(SUB, Prefetch(messages=1))
        free = await asyncio.wait_for(anext(stream), 10)
        assert free.message.id == sent[2].id
        await free.ack()
        await stream.aclose()
        assert second.items == []
        await first.close()
        for delivery in first.items:
            await delivery.ack()
        assert len(await second.count(3)) == 3
        await second.close()


@pytest.mark.parametrize("start", ["first-layout", "without-holders"])
async def test_files_of_earlier_versions_get_exclusive_queues(tmp_path: Path, start: str) -> None:
    path = tmp_path / "h.db"
    if start == "first-layout":
        write_first_layout(path)
    else:
        async with connected(path) as broker:
            await broker.declare(SUB)
            await broker.publish(messages(1))
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("DROP TABLE herald_holders")  # as the previous Herald left it
    async with connected(path) as one, connected(path) as two:
        first = Taker(one, prefetch=1)
        (held,) = await first.count(1)
        second = Taker(two)
        await standing_by(one)
        await one.publish(messages(1))
        await asyncio.sleep(0.5)
        assert second.items == []
        await held.ack()
        await first.count(2)
        await first.close()
        await first.items[1].ack()
        await second.close()
