"""The SQLite broker beyond the conformance suite: URLs and files, durability and
order, processes sharing a file, crash recovery, transient queues, dead-letter
replay at scale."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import sqlite3
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from herald import Service, connect
from herald.broker import MiB, Prefetch, Subscription
from herald.brokers import broker_from_url
from herald.brokers.sqlite import SQLiteBroker, SQLiteSettings
from herald.deadletter import PREFIX, DeadLetterReason
from herald.errors import BrokerError, BrokerURLError, MessageTooLargeError
from herald.message import Message
from herald.testing import Recorder, eventually
from herald.testing.events import Tick

from .helpers import (
    HOLDER,
    SUB,
    Child,
    connected,
    messages,
    open_broker,
    settles_on,
    stats,
    take,
    url_for,
)


def spawn_child(url: str, service: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "herald.testing.child", url, service, str(out)],
        stdin=subprocess.DEVNULL,
    )


def handled(out: Path) -> list[int]:
    return [int(line) for line in out.read_text().split()] if out.exists() else []


# -- URLs and files --------------------------------------------------------------


def test_url_paths_and_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = broker_from_url(
        "sqlite:///var/herald.db?lease=5&synchronous=full&timeout=2&dlq_retention=60"
    )
    assert isinstance(relative, SQLiteBroker)
    assert relative.settings == SQLiteSettings(
        tmp_path / "var" / "herald.db", lease=5, synchronous="full", timeout=2, dlq_retention=60
    )
    assert relative.settings.lock_path == tmp_path / "var" / "herald.db.lock"
    absolute = broker_from_url(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(absolute, SQLiteBroker)
    assert absolute.path == tmp_path / "abs.db"
    assert absolute.settings.dlq_retention == 14 * 86_400


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("sqlite:///x.db?leese=5", "leese"),
        ("sqlite:///x.db?synchronous=sometimes", "synchronous"),
        ("sqlite:///x.db?lease=0.5", "lease"),
        ("sqlite:///x.db?dlq_retention=-1", "dlq_retention"),
        ("sqlite:///x.db?timeout=soon", "timeout"),
        ("sqlite://var/x.db", "host"),
        ("sqlite://user:secret@/x.db", "host"),
        ("sqlite:///", "path"),
        ("sqlite:///var/", "path"),
    ],
)
def test_bad_urls_name_the_part_at_fault(url: str, part: str) -> None:
    with pytest.raises(BrokerURLError, match=part) as caught:
        broker_from_url(url)
    assert "secret" not in str(caught.value)


async def test_creates_parent_directories_and_names_the_path_in_errors(tmp_path: Path) -> None:
    async with connected(tmp_path / "a" / "b" / "herald.db") as broker:
        await broker.publish(messages(1))
    assert (tmp_path / "a" / "b" / "herald.db").is_file()
    (tmp_path / "dir.db").mkdir()
    broken = open_broker(tmp_path / "dir.db")
    with pytest.raises(BrokerError, match=str(tmp_path / "dir.db")):
        await broken.connect()


async def test_not_connected_and_closed_brokers_refuse_work(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "h.db")
    with pytest.raises(BrokerError, match="not connected"):
        await broker.publish(messages(1))
    stream = broker.consume(SUB, Prefetch())
    with pytest.raises(BrokerError, match="not connected"):
        await anext(stream)
    await broker.connect()
    await broker.connect()
    await broker.close()
    await broker.close()
    with pytest.raises(BrokerError):
        await broker.inspect_queues()


async def test_the_file_is_in_wal_mode_with_incremental_vacuum(tmp_path: Path) -> None:
    async with connected(tmp_path / "h.db"):
        pass
    # File-level pragmas, read from outside: no Herald table is touched.
    with contextlib.closing(sqlite3.connect(tmp_path / "h.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)


async def test_oversized_message_is_refused(tmp_path: Path) -> None:
    async with connected(tmp_path / "h.db") as broker:
        await broker.declare(SUB)
        big = Message(type="invoice.created", body=b"x" * (broker.features.max_message_bytes + 1))
        with pytest.raises(MessageTooLargeError, match="at most"):
            await broker.publish([big])
        await broker.publish([Message(type="invoice.created", body=b"y" * 1024 * 1024)])
        (delivery,) = await take(broker, 1)
        assert len(delivery.message.body) == 1024 * 1024
        assert (await stats(broker)).in_flight == 1


# -- durability and ordering -------------------------------------------------------


async def test_messages_and_leases_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with connected(path) as broker:
        await broker.declare(SUB)
        await broker.publish(messages(3))
        first = await take(broker, 1, prefetch=1)
        assert first[0].attempt == 1
    async with connected(path) as broker:
        assert (await stats(broker)).depth == 3, "a close gives leases back"
        again = await take(broker, 3)
        assert [d.message.body for d in again] == [m.body for m in messages(3)]
        assert [d.attempt for d in again] == [1, 1, 1], "a close gives leases back uncounted"
        for delivery in again:
            await delivery.ack()
        found = await stats(broker)
        assert (found.depth, found.in_flight) == (0, 0)


async def test_publish_order_with_retried_deliveries_when_due(tmp_path: Path) -> None:
    async with connected(tmp_path / "h.db") as broker:
        await broker.declare(SUB)
        await broker.publish(messages(5))
        stream = broker.consume(SUB, Prefetch(messages=10))
        order: list[tuple[bytes, int]] = []
        async with asyncio.timeout(10):
            async for delivery in stream:
                order.append((delivery.message.body, delivery.attempt))
                if delivery.attempt == 1 and delivery.message.body == messages(5)[1].body:
                    await delivery.retry(0.3, {"x-why": "flaky"})
                    found = await stats(broker)
                    assert (found.depth, found.in_flight) == (1, 3), "a waiting retry is depth"
                    continue
                if delivery.attempt == 2:
                    assert delivery.message.headers["x-why"] == "flaky"
                await delivery.ack()
                if len(order) == 6:
                    break
        await stream.aclose()
    bodies = [m.body for m in messages(5)]
    assert order == [(body, 1) for body in bodies] + [(bodies[1], 2)]


async def test_prefetch_bounds_bytes_as_well_as_messages(tmp_path: Path) -> None:
    async with connected(tmp_path / "h.db") as broker:
        await broker.declare(SUB)
        await broker.publish(messages(6, size=1000))
        stream = broker.consume(SUB, Prefetch(messages=100, bytes=2500))
        held = [await anext(stream) for _ in range(3)]
        pending = asyncio.ensure_future(anext(stream))
        found = await stats(broker)
        assert (found.in_flight, found.depth) == (3, 3), "2,000 bytes held < 2,500: one more"
        assert not pending.done()
        await held[0].ack()
        fourth = await asyncio.wait_for(pending, 10)
        assert fourth.message.body == messages(6, size=1000)[3].body
        await stream.aclose()


async def test_a_claim_reads_only_the_bodies_its_byte_window_has_room_for(
    tmp_path: Path,
) -> None:
    body = b"x" * MiB
    async with connected(tmp_path / "h.db") as broker:
        await broker.declare(SUB)
        await broker.publish([Message(type="invoice.created", body=body) for _ in range(12)])
        stream = broker.consume(SUB, Prefetch(messages=64, bytes=3 * MiB))
        tracemalloc.start()
        try:
            held = [await anext(stream) for _ in range(3)]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert [d.message.body for d in held] == [body] * 3
        assert (await stats(broker)).in_flight == 3
        # 3 bodies held (+1 copy in passing), not the 12 a message-count claim reads
        assert peak < 5 * MiB, f"{peak / MiB:.1f} MiB allocated to hand out 3 MiB"
        await stream.aclose()


async def test_release_gives_back_uncounted_and_first(tmp_path: Path) -> None:
    async with connected(tmp_path / "h.db") as broker:
        await broker.declare(SUB)
        await broker.publish(messages(2))
        first, _ = await take(broker, 2)
        await first.release()
        (again,) = await take(broker, 1)
        assert (again.message.id, again.attempt) == (first.message.id, 1)
        assert not broker.features.release_counts_attempt


# -- several processes ---------------------------------------------------------------


async def test_consumer_processes_compete_and_are_woken_without_polling(tmp_path: Path) -> None:
    url = url_for(tmp_path / "h.db", poll=60)
    service = Service("tick-svc")
    outs = [tmp_path / "one.txt", tmp_path / "two.txt"]

    @service.on(Tick)
    async def unused(event: Tick) -> None:  # pragma: no cover - only declares
        raise AssertionError(event)

    subscription = service.handlers[0].subscription
    async with connect(url) as bus:
        broker = bus.broker
        assert isinstance(broker, SQLiteBroker)
        await broker.declare(subscription)
        children = [spawn_child(url, service.name, out) for out in outs]
        try:
            for _ in range(300):
                (found,) = await broker.inspect_queues([subscription.queue])
                if found.consumers == 2:
                    break
                await asyncio.sleep(0.1)
            assert found.consumers == 2, "both children consume"
            await bus.publish(Tick(n=-1))
            # poll=60: only a wake-up datagram gets this handled within the wait
            await eventually(lambda: sum(map(len, map(handled, outs))) == 1, what="first tick")
            for start in range(0, 300, 50):
                await bus.publish_many([Tick(n=n) for n in range(start, start + 50)])
            await eventually(
                lambda: sum(map(len, map(handled, outs))) == 301, timeout=30, what="all ticks"
            )
        finally:
            for child in children:
                child.send_signal(signal.SIGTERM)
            for child in children:
                child.wait(15)
    seen = handled(outs[0]) + handled(outs[1])
    assert sorted(seen) == list(range(-1, 300))


async def test_sigkilled_consumer_leases_come_back_before_its_lease_ends(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    url = url_for(path, lease=600, poll=60)
    service = Service("billing")

    @service.on("invoice.created")
    async def record(message: Message) -> None:
        seen.add(message.id)

    seen: Recorder[str] = Recorder()
    async with connect(url) as bus:
        broker = bus.broker
        assert isinstance(broker, SQLiteBroker)
        await broker.declare(SUB)
        await broker.publish(messages(5))
        child = Child(HOLDER, url, "5")
        try:
            held = (await child.line()).split()[1:]
            assert (await stats(broker)).in_flight == 5
            worker = await bus.start(service)
            child.process.send_signal(signal.SIGKILL)
            # the 600s lease and 60s poll cannot be what brings them back within 30s
            await seen.wait_for(5, timeout=30)
            await worker.stop()
        finally:
            child.kill()
    assert sorted(seen.items) == held


async def test_cancelling_a_consumer_as_it_is_woken_cancels_and_loses_nothing(
    tmp_path: Path,
) -> None:
    rounds = 20
    async with connected(tmp_path / "h.db") as broker:
        for n in range(rounds):
            queue = Subscription("billing", f"round{n}", ("invoice.*",))
            stream = broker.consume(queue, Prefetch(messages=8))
            task = asyncio.ensure_future(anext(stream))
            await settles_on(functools.partial(_consumers, broker, queue.queue), 1)
            # the commit wakes the idle loop just before the publish returns: the
            # cancellation lands while it wakes up or while its claim is under way
            await broker.publish(messages(1))
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=5)
            assert done and task.cancelled(), "a wake-up swallowed the cancellation"
            await stream.aclose()
        expected = [(f"billing.round{n}", rounds - n, 0) for n in range(rounds)]
        await settles_on(lambda: _counts(broker), sorted(expected))


async def _consumers(broker: SQLiteBroker, queue: str) -> int | None:
    found = await broker.inspect_queues([queue])
    return found[0].consumers if found else None


async def _counts(broker: SQLiteBroker) -> list[tuple[str, int, int | None]]:
    return [(s.queue, s.depth, s.in_flight) for s in await broker.inspect_queues()]


# -- dead letters and transient queues ---------------------------------------------------


async def test_replays_many_dead_letters_in_batches_with_progress(tmp_path: Path) -> None:
    total = 1200
    async with connected(tmp_path / "h.db") as broker:
        await broker.declare(SUB)
        await broker.publish(messages(total))
        taken = await take(broker, total, prefetch=total)
        reason = DeadLetterReason(SUB.queue, "KeyError", "'x'", 1, datetime.now(UTC))
        await asyncio.gather(*(d.dead_letter(reason) for d in taken))
        letters = await broker.dead_letters(SUB.service)
        assert len(letters) == total
        assert letters[0].reason.error_type == "KeyError"
        assert letters[0].message.body == messages(1)[0].body
        assert len(await broker.dead_letters(SUB.service, limit=7)) == 7
        calls: list[tuple[int, int]] = []
        replayed = await broker.replay_dead_letters(
            SUB.service, progress=lambda done, of: calls.append((done, of))
        )
        assert replayed == total
        assert calls == [(500, total), (1000, total), (total, total)]
        assert await broker.dead_letters(SUB.service) == []
        again = await take(broker, total, prefetch=total)
        assert [d.message.body for d in again] == [m.body for m in messages(total)]
        assert {d.attempt for d in again} == {1}
        assert not any(k.startswith(PREFIX) for d in again for k in d.message.headers)


async def test_purge_and_replay_by_id(tmp_path: Path) -> None:
    async with connected(tmp_path / "h.db") as broker:
        await broker.declare(SUB)
        await broker.publish(messages(3))
        taken = await take(broker, 3)
        reason = DeadLetterReason(SUB.queue, "E", "boom", 1)
        for delivery in taken:
            await delivery.dead_letter(reason)
        ids = [d.message.id for d in taken]
        assert await broker.purge_dead_letters(SUB.service, [ids[0]]) == 1
        assert await broker.replay_dead_letters(SUB.service, [ids[2]]) == 1
        assert [dl.message.id for dl in await broker.dead_letters(SUB.service)] == [ids[1]]
        assert await broker.purge_dead_letters(SUB.service) == 1
        (back,) = await take(broker, 1)
        assert back.message.id == ids[2]


async def test_replay_goes_only_to_a_queue_of_the_same_service(tmp_path: Path) -> None:
    other = Subscription("payroll", "invoice.created", ("invoice.*",))
    async with connected(tmp_path / "h.db") as broker:
        await broker.declare(SUB)
        await broker.declare(other)
        await broker.publish(messages(1))
        (delivery,) = await take(broker, 1)
        # a reason naming another service's queue (anyone can write a reason header)
        await delivery.dead_letter(DeadLetterReason(other.queue, "E", "forged", 1))
        with pytest.raises(BrokerError, match="cannot replay"):
            await broker.replay_dead_letters(SUB.service)
        assert (await stats(broker, other.queue)).depth == 1, "only the publish itself"
        assert len(await broker.dead_letters(SUB.service)) == 1


async def test_transient_queue_goes_with_its_consumer(tmp_path: Path) -> None:
    tail = Subscription("tail-1", "all", ("#",), durable=False)
    async with connected(tmp_path / "h.db") as broker:
        stream = broker.consume(tail, Prefetch(messages=10))
        pending = asyncio.ensure_future(anext(stream))
        await settles_on(lambda: _names(broker), ["tail-1.all"])
        await broker.publish(messages(1))
        delivery = await asyncio.wait_for(pending, 5)
        assert delivery.message.type == "invoice.created"
        await stream.aclose()
        assert await broker.inspect_queues() == []


TRANSIENT_OWNER = """
import asyncio, sys
from herald.broker import Prefetch, Subscription
from herald.brokers import broker_from_url

async def main():
    broker = broker_from_url(sys.argv[1])
    await broker.connect()
    stream = broker.consume(Subscription("tail-2", "all", ("#",), durable=False), Prefetch())
    task = asyncio.ensure_future(anext(stream))
    while not await broker.inspect_queues(["tail-2.all"]):
        await asyncio.sleep(0.05)
    print("ready", flush=True)
    await task

asyncio.run(main())
"""


async def test_transient_queue_of_a_killed_process_is_collected(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    owner = Child(TRANSIENT_OWNER, url_for(path))
    try:
        assert await owner.line() == "ready"
        async with connected(path) as broker:
            assert await _names(broker) == ["tail-2.all"]
            await broker.declare(SUB)
            stream = broker.consume(SUB, Prefetch(messages=1))
            pending = asyncio.ensure_future(anext(stream))
            owner.process.send_signal(signal.SIGKILL)
            await settles_on(lambda: _names(broker), [SUB.queue], timeout=10)
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
            await stream.aclose()
    finally:
        owner.kill()


async def _names(broker: SQLiteBroker) -> list[str]:
    return [found.queue for found in await broker.inspect_queues()]
