"""Leases: a live consumer keeps what it holds, however long its handlers run; a dead
one's deliveries are claimed by others. Checked by events and counts read from Redis,
each window measured from the moment the deliveries were taken."""

from __future__ import annotations

import asyncio
import collections
import signal
import sys
import uuid
from pathlib import Path

import pytest

from herald import Context, Service
from herald.broker import Prefetch, Subscription
from herald.brokers.redis import RedisBroker
from herald.bus import connect
from herald.testing.events import Tick
from herald.testing.recorder import Recorder, eventually

from .conftest import redis_broker, shared_url
from .helpers import counts, number, stats, take, tick, until

pytestmark = pytest.mark.redis

LEASE = 0.5
SLOW = 4


async def _nothing_for(broker: RedisBroker, sub: Subscription, seconds: float) -> None:
    """A rival consumer, actively reading and claiming, gets nothing for ``seconds``."""
    stream = broker.consume(sub, Prefetch(8))
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(seconds):
                got = await anext(stream)
                raise AssertionError(f"the rival got {got.message.id} (attempt {got.attempt})")
    finally:
        await stream.aclose()


async def test_a_held_delivery_stays_with_its_live_consumer_past_three_leases(
    namespace: str,
) -> None:
    sub = Subscription("renew", "demo.tick")
    url = shared_url(namespace, lease=LEASE, block=0.05)
    async with redis_broker(url) as holder, redis_broker(url) as rival:
        await holder.declare(sub)
        await holder.publish([tick(1)])
        (held,) = await take(holder, sub, 1)  # the lease starts now
        await _nothing_for(rival, sub, 4 * LEASE)
        found = await stats(rival, sub.queue)
        assert (found.depth, found.in_flight) == (0, 1)
        await held.ack()
        assert counts(await stats(rival, sub.queue)) == {
            "depth": 0,
            "in_flight": 0,
            "consumers": 0,
        }


async def test_a_handler_running_three_leases_is_handled_once(namespace: str) -> None:
    """Two workers (two consumers) share a queue; four events' handlers run for three
    leases at once while the workers keep consuming and sweeping for abandoned entries."""
    handled: collections.Counter[int] = collections.Counter()
    done: Recorder[int] = Recorder()
    name = f"slow-{uuid.uuid4().hex[:6]}"

    def service() -> Service:
        s = Service(name, concurrency=4)

        @s.on(Tick)
        async def handle(event: Tick, ctx: Context) -> None:
            handled[event.n] += 1
            if event.n < SLOW:
                await asyncio.sleep(3 * LEASE)
            done.add(event.n)

        return s

    url = shared_url(namespace, lease=LEASE, block=0.05)
    async with connect(url) as a, connect(url) as b:
        workers = [await a.start(service()), await b.start(service())]
        await a.publish_many(Tick(n=n) for n in range(SLOW))
        await eventually(lambda: len(handled) == SLOW, what="the slow handlers started")
        await a.publish_many(Tick(n=n) for n in range(SLOW, 40))
        await eventually(lambda: set(done.items) >= set(range(SLOW, 40)), what="quick ones")
        await done.wait_for(40, timeout=20)
        await asyncio.sleep(2 * LEASE)  # a late duplicate would have been claimed by now
        for worker in workers:
            await worker.stop()
    assert set(handled) == set(range(40))
    assert max(handled.values()) == 1, {n: c for n, c in handled.items() if c > 1}


async def test_a_killed_consumers_deliveries_are_claimed_after_its_lease(
    namespace: str, tmp_path: Path
) -> None:
    """A consumer process handles one event and sits in the handlers of three more.
    While it lives a rival gets nothing; once it is SIGKILLed the rival gets those
    three, as attempt 2, and the dead consumer stops counting as one."""
    name = f"killed-{uuid.uuid4().hex[:6]}"
    url = shared_url(namespace, lease=LEASE, block=0.05)
    sub = Subscription(name, "conformance.tick")
    out = tmp_path / "out"
    async with redis_broker(url) as rival, connect(url) as bus:
        await rival.declare(sub)
        await bus.publish_many(Tick(n=n) for n in range(4))
        child = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "herald.testing.child", url, name, str(out)],
            *["--pause-after", "1"],
            stdin=asyncio.subprocess.DEVNULL,
        )
        try:
            await until(rival, sub.queue, depth=0, in_flight=3, consumers=1)
            await _nothing_for(rival, sub, 4 * LEASE)
            assert child.returncode is None, "the child lived all along"
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        (handled,) = (int(line) for line in out.read_text().split())
        again = await take(rival, sub, 3)
        assert sorted(number(d) for d in again) == sorted({0, 1, 2, 3} - {handled})
        assert [d.attempt for d in again] == [2, 2, 2], "lost with its consumer: an attempt"
        for delivery in again:
            await delivery.ack()
        await until(rival, sub.queue, depth=0, in_flight=0, consumers=0)


async def test_closing_a_broker_leaves_its_unsettled_deliveries_to_others_at_once(
    namespace: str,
) -> None:
    sub = Subscription("closing", "demo.tick")
    url = shared_url(namespace, lease=30, block=0.05)
    async with redis_broker(url) as survivor:
        await survivor.declare(sub)
        await survivor.publish([tick(n) for n in range(3)])
        async with redis_broker(url) as leaving:
            taken = await take(leaving, sub, 3)
            assert [d.attempt for d in taken] == [1, 1, 1]
            assert (await stats(survivor, sub.queue)).in_flight == 3
        found = await stats(survivor, sub.queue)
        assert (found.depth, found.in_flight) == (3, 0), "claimable now, not after 30 s"
        again = await take(survivor, sub, 3)
        assert sorted(number(d) for d in again) == [0, 1, 2]
        assert [d.attempt for d in again] == [2, 2, 2]
        for delivery in again:
            await delivery.ack()


async def test_entries_read_but_never_handed_out_come_back_uncounted(
    broker: RedisBroker,
) -> None:
    """The read script takes five entries for a window of five; the generator hands out
    one and is closed. The other four go back at once, as first attempts; the one
    handed out stays in flight until settled."""
    sub = Subscription("unyielded", "demo.tick")
    await broker.declare(sub)
    await broker.publish([tick(n) for n in range(5)])
    stream = broker.consume(sub, Prefetch(5))
    first = await anext(stream)
    await stream.aclose()
    found = await stats(broker, sub.queue)
    assert (found.depth, found.in_flight) == (4, 1)
    rest = await take(broker, sub, 4)
    assert sorted(number(d) for d in rest) == [1, 2, 3, 4]
    assert [d.attempt for d in rest] == [1, 1, 1, 1]
    for delivery in [first, *rest]:
        await delivery.ack()
    assert counts(await stats(broker, sub.queue)) == {"depth": 0, "in_flight": 0, "consumers": 0}
