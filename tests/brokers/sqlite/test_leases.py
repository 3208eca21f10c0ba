"""Leases and waiting: a delivery stays with its live consumer however long it takes,
comes back when its settlement failed or its consumer hangs, and no write waits for
the database (or another process's writer lock) past the broker's ``timeout``."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from herald.broker import Delivery, Prefetch
from herald.errors import BrokerError, PublishError

from .helpers import (
    HOLDER,
    SUB,
    Child,
    connected,
    foreign_writer,
    lock_holder,
    messages,
    open_broker,
    stats,
    url_for,
)

Blocker = Callable[[Path], AbstractContextManager[None]]


@pytest.mark.parametrize("blocker", [foreign_writer, lock_holder], ids=["database", "lock"])
async def test_a_settlement_that_failed_comes_back_to_the_live_consumer(
    tmp_path: Path, blocker: Blocker
) -> None:
    path = tmp_path / "h.db"
    async with connected(path, lease=1, timeout=0.2) as broker:
        await broker.declare(SUB)
        await broker.publish(messages(1))
        stream = broker.consume(SUB, Prefetch(messages=1))
        first = await anext(stream)
        with blocker(path), pytest.raises(BrokerError):
            await asyncio.wait_for(first.ack(), 10)
        # the failed ack freed the only prefetch slot, and the row's lease, no longer
        # renewed, runs out: the same consumer, still alive, gets the message again
        again = await asyncio.wait_for(anext(stream), 20)
        assert (again.message.id, again.attempt) == (first.message.id, 2)
        await again.ack()
        found = await stats(broker)
        assert (found.depth, found.in_flight) == (0, 0)
        await stream.aclose()


async def test_acks_written_together_settle_together_or_come_back_together(
    tmp_path: Path,
) -> None:
    """Acks queued for one transaction are one statement: they all remove their rows,
    or, if the write fails, they all fail and their deliveries come back."""
    path = tmp_path / "h.db"
    async with connected(path, lease=1, timeout=0.2) as broker:
        await broker.declare(SUB)
        await broker.publish(messages(5))
        stream = broker.consume(SUB, Prefetch(messages=5))
        first = [await anext(stream) for _ in range(5)]
        await asyncio.wait_for(asyncio.gather(*(d.ack() for d in first[:3])), 10)
        found = await stats(broker)
        assert found.in_flight == 2
        with foreign_writer(path):
            failed = await asyncio.wait_for(
                asyncio.gather(*(d.ack() for d in first[3:]), return_exceptions=True), 10
            )
        assert [type(f) for f in failed] == [BrokerError, BrokerError]
        again = [await asyncio.wait_for(anext(stream), 20) for _ in range(2)]
        assert sorted((d.message.id, d.attempt) for d in again) == sorted(
            (d.message.id, 2) for d in first[3:]
        )
        await asyncio.gather(*(d.ack() for d in again))
        found = await stats(broker)
        assert (found.depth, found.in_flight) == (0, 0)
        await stream.aclose()


async def test_a_database_busy_for_a_moment_does_not_fail_a_settlement(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with connected(path, timeout=10) as broker:
        await broker.declare(SUB)
        await broker.publish(messages(2))
        stream = broker.consume(SUB, Prefetch(messages=2))
        first, second = await anext(stream), await anext(stream)
        inside = threading.Event()

        def busy_for_a_moment() -> None:
            with foreign_writer(path):
                inside.set()
                threading.Event().wait(0.5)

        writer = threading.Thread(target=busy_for_a_moment)
        writer.start()
        await asyncio.to_thread(inside.wait, 10)
        await asyncio.gather(first.ack(), second.retry(0, {"x-n": "2"}))
        await asyncio.to_thread(writer.join)
        again = await asyncio.wait_for(anext(stream), 10)
        assert (again.message.id, again.attempt) == (second.message.id, 2)
        await again.ack()
        found = await stats(broker)
        assert (found.depth, found.in_flight) == (0, 0)
        await stream.aclose()


async def test_a_delivery_held_for_many_leases_stays_with_its_live_consumer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.db"
    async with connected(path, lease=1) as holder, connected(path, lease=1) as rival:
        await holder.declare(SUB)
        await holder.publish(messages(1))
        stream = holder.consume(SUB, Prefetch(messages=1))
        held = await anext(stream)
        rivals: list[Delivery] = []

        async def compete() -> None:
            async for delivery in rival.consume(SUB, Prefetch(messages=10)):
                rivals.append(delivery)

        competing = asyncio.create_task(compete())
        await asyncio.sleep(5)  # five leases; the handler is "still running"
        found = await stats(holder)
        assert (found.depth, found.in_flight, found.consumers) == (0, 1, 2)
        assert rivals == [], "a delivery held by a live consumer went to another"
        await held.ack()
        competing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await competing
        await stream.aclose()
        assert rivals == []


async def test_a_hung_consumer_loses_its_leases(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    url = url_for(path, lease=1)
    async with connected(path, lease=1) as broker:
        await broker.declare(SUB)
        await broker.publish(messages(2))
        child = Child(HOLDER, url, "2")
        try:
            held = (await child.line()).split()[1:]
            child.process.send_signal(signal.SIGSTOP)  # alive, but its loop no longer runs
            stream = broker.consume(SUB, Prefetch(messages=10))
            back = [await asyncio.wait_for(anext(stream), 20) for _ in held]
            assert sorted(d.message.id for d in back) == held
            assert {d.attempt for d in back} == {2}
            for delivery in back:
                await delivery.ack()
            await stream.aclose()
        finally:
            child.process.send_signal(signal.SIGCONT)
            child.kill()


async def test_a_write_waits_for_the_writer_lock_within_its_deadline(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with connected(path, timeout=10) as broker:
        await broker.declare(SUB)
        inside = threading.Event()

        def hold_for_a_moment() -> None:
            with lock_holder(path):
                inside.set()
                threading.Event().wait(0.3)

        holder = threading.Thread(target=hold_for_a_moment)
        holder.start()
        await asyncio.to_thread(inside.wait, 10)
        await asyncio.gather(*(broker.publish(messages(1)) for _ in range(5)))
        await asyncio.to_thread(holder.join)
        assert (await stats(broker)).depth == 5


async def test_the_writer_lock_has_a_deadline_and_the_loop_stays_free(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with connected(path, timeout=0.5) as broker:
        await broker.declare(SUB)
        with lock_holder(path):
            publishing = asyncio.create_task(broker.publish(messages(1)))
            turns = 0
            async with asyncio.timeout(10):
                while not publishing.done():
                    turns += 1
                    await asyncio.sleep(0.01)
            with pytest.raises(PublishError, match=re.escape(f"writer lock {path}.lock")):
                await publishing
            assert turns > 1, "the event loop ran while the publish waited"
        await broker.publish(messages(1))
        assert (await stats(broker)).depth == 1, "only the publish after the lock was free"
    late = open_broker(path, timeout=0.2)
    with lock_holder(path), pytest.raises(BrokerError, match=re.escape(f"{path}.lock")):
        await asyncio.wait_for(late.connect(), 10)
    async with connected(path) as broker:
        assert (await stats(broker)).depth == 1
