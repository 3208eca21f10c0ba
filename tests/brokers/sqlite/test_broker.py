"""The SQLite broker beyond the conformance suite: processes sharing a file, crash
recovery, idle CPU, durability, dead-letter replay at scale, transient queues."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from herald import Service, connect
from herald.broker import Delivery, Subscription
from herald.brokers import broker_from_url
from herald.brokers.sqlite import SQLiteBroker
from herald.deadletter import PREFIX, DeadLetterReason
from herald.errors import BrokerError, BrokerURLError, PublishError
from herald.message import Message
from herald.testing import Recorder, eventually
from herald.testing.events import Tick

SUB = Subscription("billing", "invoice.created", ("invoice.*",))


def url_for(path: Path, **options: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


def open_broker(path: Path, **options: object) -> SQLiteBroker:
    broker = broker_from_url(url_for(path, **options))
    assert isinstance(broker, SQLiteBroker)
    return broker


@contextlib.asynccontextmanager
async def connected(path: Path, **options: object) -> AsyncIterator[SQLiteBroker]:
    broker = open_broker(path, **options)
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.close()


def messages(count: int, event_type: str = "invoice.created") -> list[Message]:
    return [Message(type=event_type, body=f'{{"n": {n}}}'.encode()) for n in range(count)]


async def take(broker: SQLiteBroker, count: int, prefetch: int = 100) -> list[Delivery]:
    stream = broker.consume(SUB, prefetch)
    taken: list[Delivery] = []
    try:
        async with asyncio.timeout(10):
            async for delivery in stream:
                taken.append(delivery)
                if len(taken) == count:
                    break
    finally:
        await stream.aclose()
    return taken


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as conn:
        return conn.execute(sql).fetchall()


def spawn_child(url: str, service: str, out: Path, delay: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "herald.testing.child", url, service, str(out), str(delay)],
        stdin=subprocess.DEVNULL,
    )


def spawn_script(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )


def handled(out: Path) -> list[int]:
    return [int(line) for line in out.read_text().split()] if out.exists() else []


# -- URLs and files --------------------------------------------------------------


def test_url_paths_options_and_unknown_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = broker_from_url("sqlite:///var/herald.db?lease=5&synchronous=full")
    assert isinstance(relative, SQLiteBroker)
    assert relative.path == tmp_path / "var" / "herald.db"
    assert (relative.lease, relative.synchronous) == (5.0, "full")
    absolute = broker_from_url(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(absolute, SQLiteBroker)
    assert absolute.path == tmp_path / "abs.db"
    with pytest.raises(BrokerURLError, match="leese"):
        broker_from_url("sqlite:///x.db?leese=5")
    with pytest.raises(BrokerURLError, match="synchronous"):
        broker_from_url("sqlite:///x.db?synchronous=sometimes")


async def test_creates_parent_directories_and_names_the_path_in_errors(tmp_path: Path) -> None:
    async with connected(tmp_path / "a" / "b" / "herald.db") as broker:
        await broker.publish(messages(1))
    assert (tmp_path / "a" / "b" / "herald.db").is_file()
    (tmp_path / "dir.db").mkdir()
    broken = open_broker(tmp_path / "dir.db")
    with pytest.raises(BrokerError, match=str(tmp_path / "dir.db")):
        await broken.connect()


async def test_oversized_message_is_refused(tmp_path: Path) -> None:
    async with connected(tmp_path / "h.db") as broker:
        await broker.declare(SUB)
        big = Message(type="invoice.created", body=b"x" * (broker.features.max_message_bytes + 1))
        with pytest.raises(PublishError, match="at most"):
            await broker.publish([big])
        await broker.publish([Message(type="invoice.created", body=b"y" * 1024 * 1024)])
        (delivery,) = await take(broker, 1)
        assert len(delivery.message.body) == 1024 * 1024


# -- durability and ordering -------------------------------------------------------


async def test_messages_and_leases_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with connected(path) as broker:
        await broker.declare(SUB)
        await broker.publish(messages(3))
        first = await take(broker, 1, prefetch=1)
        assert first[0].attempt == 1
    async with connected(path) as broker:
        again = await take(broker, 3)
        assert [d.message.body for d in again] == [m.body for m in messages(3)]
        assert [d.attempt for d in again] == [1, 1, 1], "a close gives leases back uncounted"
        for delivery in again:
            await delivery.ack()
        await broker.close()
        await broker.close()
    assert query(path, "SELECT count(*) FROM herald_deliveries") == [(0,)]


async def test_publish_order_with_retried_deliveries_when_due(tmp_path: Path) -> None:
    async with connected(tmp_path / "h.db") as broker:
        await broker.declare(SUB)
        await broker.publish(messages(5))
        stream = broker.consume(SUB, 10)
        order: list[tuple[bytes, int]] = []
        retried_at = 0.0
        async with asyncio.timeout(10):
            async for delivery in stream:
                order.append((delivery.message.body, delivery.attempt))
                if delivery.attempt == 1 and delivery.message.body == b'{"n": 1}':
                    retried_at = time.monotonic()
                    await delivery.retry(0.3, {"x-why": "flaky"})
                    continue
                if delivery.attempt == 2:
                    assert time.monotonic() - retried_at >= 0.29
                    assert delivery.message.headers["x-why"] == "flaky"
                await delivery.ack()
                if len(order) == 6:
                    break
        await stream.aclose()
    assert order == [
        (b'{"n": 0}', 1),
        (b'{"n": 1}', 1),
        (b'{"n": 2}', 1),
        (b'{"n": 3}', 1),
        (b'{"n": 4}', 1),
        (b'{"n": 1}', 2),
    ]


# -- several processes ---------------------------------------------------------------


async def test_consumer_processes_compete_and_are_woken_without_polling(tmp_path: Path) -> None:
    url = url_for(tmp_path / "h.db", poll=60)
    service = Service("tick-svc")
    outs = [tmp_path / "one.txt", tmp_path / "two.txt"]
    async with connect(url) as bus:

        @service.on(Tick)
        async def unused(event: Tick) -> None:  # pragma: no cover - only declares
            raise AssertionError(event)

        await bus.broker.declare(service.handlers[0].subscription)
        children = [spawn_child(url, service.name, out, 0.0) for out in outs]
        try:
            await eventually(
                lambda: len(query(tmp_path / "h.db", "SELECT id FROM herald_consumers")) == 2,
                timeout=30,
                what="both children registered",
            )
            started = time.monotonic()
            await bus.publish(Tick(n=-1))
            await eventually(lambda: sum(map(len, map(handled, outs))) == 1, what="first tick")
            assert time.monotonic() - started < 2, "a publish wakes a consumer (poll is 60s)"
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


async def test_sigkilled_consumer_leases_come_back_at_once(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    url = url_for(path, lease=120, poll=60)
    service = Service("crashy")

    @service.on(Tick)
    async def record(event: Tick) -> None:
        seen.add(event)

    seen: Recorder[Tick] = Recorder()
    async with connect(url) as bus:
        await bus.broker.declare(service.handlers[0].subscription)
        await bus.publish_many([Tick(n=n) for n in range(5)])
        child = spawn_child(url, service.name, tmp_path / "out.txt", 600.0)
        try:
            await eventually(
                lambda: query(path, "SELECT count(*) FROM herald_deliveries"
                              " WHERE consumer IS NOT NULL") == [(5,)],
                timeout=30,
                what="the child leasing every tick",
            )  # fmt: skip
            worker = await bus.start(service)
            child.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await seen.wait_for(5, timeout=10)
            assert time.monotonic() - killed < 2, "reclaimed on exit, not after the 120s lease"
            await worker.stop()
        finally:
            child.kill()
            child.wait(10)
    assert sorted(t.n for t in seen.items) == [0, 1, 2, 3, 4]
    assert handled(tmp_path / "out.txt") == []


async def test_expired_lease_of_a_consumer_on_another_host_is_reclaimed(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with connected(path, lease=1) as broker:
        await broker.declare(SUB)
        await broker.publish(messages(2))
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.execute(
                "INSERT INTO herald_consumers (id, pid, host, heartbeat) VALUES (999, 1, 'far', ?)",
                (time.time() - 0.5,),
            )
            conn.execute("UPDATE herald_deliveries SET consumer = 999, attempt = 1")
        started = time.monotonic()
        taken = await take(broker, 2)
        assert time.monotonic() - started >= 0.4, "not before the lease expired"
        assert [d.attempt for d in taken] == [2, 2]
        assert query(path, "SELECT id FROM herald_consumers WHERE id = 999") == []


async def test_leases_of_unregistered_consumers_are_swept(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with connected(path) as broker:
        await broker.declare(SUB)
        await broker.publish(messages(1))
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("UPDATE herald_deliveries SET consumer = 4242, attempt = 1")
        (delivery,) = await take(broker, 1)
        assert delivery.attempt == 2


@pytest.mark.parametrize(("option", "level"), [("normal", 1), ("full", 2)])
async def test_synchronous_option_reaches_the_connection(
    tmp_path: Path, option: str, level: int
) -> None:
    async with connected(tmp_path / "h.db", synchronous=option) as broker:
        found = await broker._run(lambda s: s.conn.execute("PRAGMA synchronous").fetchone())
        assert found == (level,)
        assert await broker._run(lambda s: s.conn.execute("PRAGMA journal_mode").fetchone()) == (
            "wal",
        )


async def test_idle_consumer_uses_almost_no_cpu(tmp_path: Path) -> None:
    async with connected(tmp_path / "h.db") as broker:
        await broker.declare(SUB)
        stream = broker.consume(SUB, 32)
        pending = asyncio.ensure_future(stream.__anext__())
        await eventually(
            lambda: len(query(tmp_path / "h.db", "SELECT id FROM herald_consumers")) == 1,
            what="the consumer registered",
        )
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.sleep(1.5)
        used = (time.process_time() - cpu) / (time.monotonic() - wall)
        assert used < 0.1, f"idle consumer used {used:.3f}s CPU per second"
        await broker.publish(messages(1))
        delivery = await asyncio.wait_for(pending, 5)
        await delivery.ack()
        await stream.aclose()


async def test_cancelling_a_consumer_as_it_is_woken_still_cancels(tmp_path: Path) -> None:
    async with connected(tmp_path / "h.db") as broker:
        await broker.declare(SUB)
        for _ in range(20):
            stream = broker.consume(SUB, 8)
            task = asyncio.ensure_future(stream.__anext__())
            await eventually(lambda: bool(broker._wakes), what="the consumer idle")
            await asyncio.sleep(0.01)
            broker._wake_up(None)  # a wake-up and a cancellation in the same loop turn
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=5)
            assert done and task.cancelled(), "a wake-up swallowed the cancellation"
            await stream.aclose()
            broker._wakes.clear()


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
        assert letters[0].message.body == b'{"n": 0}'
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


async def test_transient_queue_goes_with_its_consumer(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    tail = Subscription("tail-1", "all", ("#",), durable=False)
    async with connected(path) as broker:
        stream = broker.consume(tail, 10)
        pending = asyncio.ensure_future(stream.__anext__())
        await eventually(
            lambda: query(path, "SELECT name FROM herald_queues") == [("tail-1.all",)],
            what="the transient queue declared",
        )
        await broker.publish(messages(1))
        delivery = await asyncio.wait_for(pending, 5)
        assert delivery.message.type == "invoice.created"
        await stream.aclose()
        assert query(path, "SELECT name FROM herald_queues") == []
        await broker.publish(messages(1))
        assert query(path, "SELECT count(*) FROM herald_deliveries") == [(0,)]


TRANSIENT_OWNER = """
import asyncio, sys
from herald.brokers import broker_from_url
from herald.broker import Subscription

async def main():
    broker = broker_from_url(sys.argv[1])
    await broker.connect()
    stream = broker.consume(Subscription("tail-2", "all", ("#",), durable=False), 10)
    task = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.2)
    print("ready", flush=True)
    await task

asyncio.run(main())
"""


async def test_transient_queue_of_a_killed_process_is_collected(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    owner = spawn_script(TRANSIENT_OWNER, url_for(path))
    try:
        assert owner.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(owner.stdout.readline), 30)
        assert line.strip() == b"ready"
        assert query(path, "SELECT name FROM herald_queues") == [("tail-2.all",)]
        async with connected(path) as broker:
            await broker.declare(SUB)
            stream = broker.consume(SUB, 1)
            pending = asyncio.ensure_future(stream.__anext__())
            owner.send_signal(signal.SIGKILL)
            await eventually(
                lambda: query(path, "SELECT name FROM herald_queues") == [(SUB.queue,)],
                timeout=5,
                what="the dead owner's transient queue dropped",
            )
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
            await stream.aclose()
    finally:
        owner.kill()
        owner.wait(10)
