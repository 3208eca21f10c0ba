"""Exclusive subscriptions: one consumer at a time takes a queue's deliveries, the
others stand by (counted as consumers) and take over when it stops, its broker
closes, or its process dies; what it held unsettled comes first, before anything
newer. Each takeover is an event: the standby's deliveries, in order, and their
attempts."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from herald import Context, Service
from herald.broker import Delivery, Prefetch, Subscription
from herald.brokers.redis import RedisBroker
from herald.bus import connect
from herald.errors import BrokerError
from herald.testing.events import Keyed
from herald.testing.recorder import eventually

from .conftest import redis_broker, shared_url
from .helpers import number, stats, take, tick, until

pytestmark = pytest.mark.redis

LEASE = 1.0
REPO = Path(__file__).resolve().parents[3]


class _Collector:
    """Takes deliveries from one consumer in a task, noting when each arrived."""

    def __init__(self, broker: RedisBroker, sub: Subscription, prefetch: Prefetch) -> None:
        self.items: list[Delivery] = []
        self.times: list[float] = []
        self._task = asyncio.create_task(self._pull(broker, sub, prefetch))

    async def _pull(self, broker: RedisBroker, sub: Subscription, prefetch: Prefetch) -> None:
        async for delivery in broker.consume(sub, prefetch):
            self.items.append(delivery)
            self.times.append(time.monotonic())

    async def count(self, n: int) -> list[Delivery]:
        await eventually(lambda: len(self.items) >= n or self._task.done(), 20, f"{n} taken")
        if self._task.done():
            self._task.result()
        return self.items[:n]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


Collect = Callable[[RedisBroker, Subscription, Prefetch], _Collector]


@pytest.fixture
async def collect() -> AsyncIterator[Collect]:
    """Makes collectors, and stops those still running when the test ends."""
    made: list[_Collector] = []

    def make(broker: RedisBroker, sub: Subscription, prefetch: Prefetch) -> _Collector:
        made.append(_Collector(broker, sub, prefetch))
        return made[-1]

    yield make
    for collector in made:
        await collector.close()


def _exclusive(base: str) -> Subscription:
    return Subscription(f"{base}-{uuid.uuid4().hex[:6]}", "demo.tick", exclusive=True)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def _hold(url: str, service: str, out: Path, prefetch: int) -> asyncio.subprocess.Process:
    """A process holding the queue (see holder.py): it records ids, settles nothing."""
    return await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tests.brokers.redis.holder", url, service, str(out)],
        str(prefetch),
        cwd=REPO,
        stdin=asyncio.subprocess.DEVNULL,
    )


async def _stop(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        child.kill()
        await child.wait()


async def test_a_standby_takes_over_within_the_lease_once_the_holder_is_killed(
    namespace: str, tmp_path: Path, collect: Collect
) -> None:
    """A process holds three deliveries of ten; a standby in this process gets nothing
    while it lives. SIGKILLed, it renews nothing more: its lock lapses a lease after
    its last renewal (at most a third of a lease before the kill), and the standby
    takes over then, taking the three first (attempt 2), then the rest in order."""
    url = shared_url(namespace, lease=LEASE, block=0.05)
    sub = _exclusive("killed")
    out = tmp_path / "held"
    async with redis_broker(url) as broker:
        await broker.declare(sub)
        sent = [tick(n) for n in range(10)]
        await broker.publish(sent)
        child = await _hold(url, sub.service, out, 3)
        try:
            await eventually(lambda: len(_lines(out)) == 3, 20, "the holder holding three")
            standby = collect(broker, sub, Prefetch(20))
            await until(broker, sub.queue, depth=7, in_flight=3, consumers=2)
            await asyncio.sleep(2 * LEASE)
            assert standby.items == [], "the standby took nothing while the holder lived"
        finally:
            await _stop(child)
        killed = time.monotonic()
        got = await standby.count(10)
        took = standby.times[0] - killed
        held = _lines(out)
        assert held == [m.id for m in sent[:3]]
        assert [d.message.id for d in got] == [m.id for m in sent], "what it held comes first"
        assert [d.attempt for d in got] == [2, 2, 2] + [1] * 7
        # the bound: a lease after the last renewal; a little slack for a loaded host
        assert LEASE * 2 / 3 - 0.1 <= took <= LEASE + 1.0, f"took over after {took:.2f}s"
        for delivery in got:
            await delivery.ack()
        await until(broker, sub.queue, depth=0, in_flight=0, consumers=1)
        await standby.close()
        await until(broker, sub.queue, consumers=0)


async def test_a_holder_that_stops_hands_over_once_it_settled_what_it_held(
    namespace: str, collect: Collect
) -> None:
    """The lease is 30 s, longer than the collector waits: every takeover here is a
    hand-over, never a lapsed lock. A holder that stopped keeps the queue while it
    holds a delivery; once that is settled (released here) the standby takes over,
    and what was released comes to it before anything newer."""
    url = shared_url(namespace, lease=30, block=0.05)
    sub = _exclusive("stops")
    async with redis_broker(url) as a, redis_broker(url) as b:
        await a.declare(sub)
        sent = [tick(n) for n in range(6)]
        await a.publish(sent)
        first = a.consume(sub, Prefetch(2))
        one, two = await anext(first), await anext(first)
        standby = collect(b, sub, Prefetch(10))
        await until(a, sub.queue, depth=4, in_flight=2, consumers=2)
        await asyncio.sleep(0.5)
        assert standby.items == [], "the standby took nothing while the holder consumed"
        await one.ack()
        await first.aclose()
        assert (await stats(a, sub.queue)).consumers == 1, "a closed consumer counts no more"
        await asyncio.sleep(0.5)
        assert standby.items == [], "the stopped holder keeps the queue while it holds one"
        await two.release()
        got = await standby.count(5)
        assert [d.message.id for d in got] == [m.id for m in sent[1:]]
        assert [d.attempt for d in got] == [1] * 5, "a release counts no attempt"
        for delivery in got:
            await delivery.ack()


async def test_a_holder_that_stops_holding_nothing_hands_over_at_once(
    namespace: str, collect: Collect
) -> None:
    url = shared_url(namespace, lease=30, block=0.05)
    sub = _exclusive("idle")
    async with redis_broker(url) as a, redis_broker(url) as b:
        await a.declare(sub)
        await a.publish([tick(0)])
        first = a.consume(sub, Prefetch(2))
        await (await anext(first)).ack()
        standby = collect(b, sub, Prefetch(10))
        await until(a, sub.queue, consumers=2)
        await a.publish([tick(n) for n in range(1, 4)])
        await asyncio.sleep(0.5)
        assert standby.items == []
        await first.aclose()
        got = await standby.count(3)
        assert [number(d) for d in got] == [1, 2, 3]
        for delivery in got:
            await delivery.ack()


async def test_a_closing_broker_leaves_what_it_held_to_the_standby_first(
    namespace: str, collect: Collect
) -> None:
    url = shared_url(namespace, lease=30, block=0.05)
    sub = _exclusive("closing")
    async with redis_broker(url) as survivor:
        await survivor.declare(sub)
        sent = [tick(n) for n in range(6)]
        await survivor.publish(sent)
        async with redis_broker(url) as leaving:
            stream = leaving.consume(sub, Prefetch(3))
            held = [await anext(stream) for _ in range(3)]
            standby = collect(survivor, sub, Prefetch(10))
            await until(survivor, sub.queue, depth=3, in_flight=3, consumers=2)
        with pytest.raises(BrokerError, match="closed"):
            await anext(stream)
        got = await standby.count(6)
        assert [d.message.id for d in got] == [m.id for m in sent]
        assert [d.message.id for d in held] == [m.id for m in sent[:3]]
        assert [d.attempt for d in got] == [2, 2, 2, 1, 1, 1]
        for delivery in got:
            await delivery.ack()
        await standby.close()


async def test_a_queue_declared_without_exclusive_is_consumed_exclusively_as_it_is(
    namespace: str, collect: Collect
) -> None:
    """Exclusivity lives with the consumers, not the queue: a queue declared (and
    filled) without it needs no new declaration, and keeps its messages. A consumer
    that does not ask for exclusivity is not held back by the lock."""
    url = shared_url(namespace, lease=30, block=0.05)
    plain = Subscription(f"existing-{uuid.uuid4().hex[:6]}", "demo.tick")
    exclusive = Subscription(plain.service, plain.name, exclusive=True)
    async with redis_broker(url) as a, redis_broker(url) as b:
        await a.declare(plain)
        sent = [tick(n) for n in range(6)]
        await a.publish(sent)
        holder = collect(a, exclusive, Prefetch(2))
        held = await holder.count(2)
        standby = collect(b, exclusive, Prefetch(10))
        await until(a, plain.queue, depth=4, in_flight=2, consumers=2)
        (alongside,) = await take(b, plain, 1)
        assert [d.message.id for d in held] == [m.id for m in sent[:2]]
        assert alongside.message.id == sent[2].id
        assert standby.items == []
        for delivery in [*held, alongside]:
            await delivery.ack()
        for delivery in (await holder.count(4))[2:]:
            await delivery.ack()
        await (await holder.count(5))[4].ack()
        assert [d.message.id for d in holder.items] == [m.id for m in sent[:2] + sent[3:]]
        assert standby.items == []


async def test_a_stalled_holder_that_lost_the_lock_stands_by(
    namespace: str, tmp_path: Path, collect: Collect
) -> None:
    """A holder process stopped (SIGSTOP) for three leases renews nothing: the standby
    takes over with what it held. Continued, the old holder finds the lock taken: it
    takes nothing more and stands by, counted as a consumer."""
    url = shared_url(namespace, lease=LEASE, block=0.05)
    sub = _exclusive("stalled")
    out = tmp_path / "held"
    async with redis_broker(url) as broker:
        await broker.declare(sub)
        await broker.publish([tick(n) for n in range(5)])
        child = await _hold(url, sub.service, out, 3)
        try:
            await eventually(lambda: len(_lines(out)) == 3, 20, "the holder holding three")
            standby = collect(broker, sub, Prefetch(20))
            await until(broker, sub.queue, consumers=2)
            child.send_signal(signal.SIGSTOP)
            got = await standby.count(5)
            child.send_signal(signal.SIGCONT)
            await until(broker, sub.queue, depth=0, in_flight=5, consumers=2)
            await broker.publish([tick(n) for n in range(5, 10)])
            got = await standby.count(10)
            await asyncio.sleep(2 * LEASE)
            assert child.returncode is None
            assert len(_lines(out)) == 3, "the stalled holder took nothing more"
            assert len(standby.items) == 10
            assert [d.attempt for d in got] == [2, 2, 2] + [1] * 7
            assert (await stats(broker, sub.queue)).consumers == 2
        finally:
            await _stop(child)
        for delivery in got:
            await delivery.ack()
        await standby.close()


async def test_a_worker_that_stops_hands_over_with_the_order_per_key_kept(
    namespace: str,
) -> None:
    """Two workers of one exclusive service; the first stops mid-stream while its
    handlers run and deliveries wait in its lanes (given back). The second takes over
    once the first settled everything: every event handled once, and each key's
    events finished in publish order across the two (a successor taking over while
    the first still ran handlers would finish later events of their keys first)."""
    keys, per_key = 8, 25
    name = f"handover-{uuid.uuid4().hex[:6]}"
    handled: list[tuple[str, str, int]] = []

    def service(worker: str) -> Service:
        s = Service(name, concurrency=4, prefetch=16, exclusive=True)

        @s.on(Keyed)
        async def handle(event: Keyed, ctx: Context) -> None:
            await asyncio.sleep(0.05)
            handled.append((worker, event.key, event.seq))

        return s

    url = shared_url(namespace, lease=30, block=0.05)
    async with connect(url) as a, connect(url) as b:
        first = await a.start(service("first"))
        await a.publish_many(
            (Keyed(key=f"k{k}", seq=s), f"k{k}") for s in range(per_key) for k in range(keys)
        )
        await eventually(lambda: len(handled) >= 40, 20, "the first handling")
        second = await b.start(service("second"))
        await first.stop()
        await eventually(lambda: len(handled) >= keys * per_key, 60, "all handled")
        await asyncio.sleep(0.2)
        await second.stop()
    assert sorted((k, s) for _, k, s in handled) == sorted(
        (f"k{k}", s) for k in range(keys) for s in range(per_key)
    ), "every event handled once"
    workers = [w for w, _, _ in handled]
    assert "second" in workers and workers == sorted(workers), "one worker, then the other"
    for k in range(keys):
        seqs = [s for _, key, s in handled if key == f"k{k}"]
        assert seqs == list(range(per_key)), f"k{k}: {seqs}"
