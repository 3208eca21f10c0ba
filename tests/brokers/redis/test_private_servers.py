"""Everything that stops, restarts or kills a Redis server, on private servers that
these tests start on their own ports (never the shared server)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from herald import Context, Service
from herald.broker import Prefetch, Subscription
from herald.bus import connect
from herald.errors import BrokerError, ConnectionLostError, PublishError
from herald.testing import SCENARIOS, Environment
from herald.testing.events import Tick
from herald.testing.recorder import Recorder

from .conftest import redis_broker
from .helpers import counts, number, stats, take, tick
from .server import RedisServer, private_server

pytestmark = pytest.mark.redis


def test_the_server_helper_refuses_to_pretend(tmp_path: Path) -> None:
    """Starting where a server already listens fails (no "do nothing if running");
    stopping fails unless this helper's own process was running."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    server = RedisServer(tmp_path / "a", durable=False)
    server.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        with pytest.raises(RuntimeError, match="taken"):
            RedisServer(tmp_path / "b", durable=False, port=server.port).start()
        with pytest.raises(RuntimeError, match="no redis-server process"):
            RedisServer(tmp_path / "b", durable=False, port=server.port).stop()
        server.stop()
        with pytest.raises(RuntimeError, match="no redis-server process"):
            server.stop()
    finally:
        if server.running:
            server.stop(kill=True)


async def test_features_say_persistent_only_with_the_append_only_file(
    durable_server: RedisServer,
) -> None:
    async with redis_broker(durable_server.url()) as broker:
        assert broker.features.persistent is True


async def test_durable_server_restart_under_load_loses_nothing(
    durable_server: RedisServer,
) -> None:
    async def restart() -> None:
        await asyncio.to_thread(durable_server.restart)

    env = Environment(
        durable_server.url("durable", lease=1, block=0.2),
        durable_server.workdir,
        restart,
        token=uuid.uuid4().hex[:8],
    )
    scenario = next(s for s in SCENARIOS if s.name == "broker_restart_under_load_loses_nothing")
    try:
        await scenario.run(env)
    finally:
        await env.destroy()


async def test_a_confirmed_publish_survives_a_crash(durable_server: RedisServer) -> None:
    url = durable_server.url(lease=1, block=0.05)
    sub = Subscription("crash", "demo.tick")
    async with redis_broker(url) as broker:
        await broker.declare(sub)
        await broker.publish([tick(n) for n in range(100)])
    await asyncio.to_thread(durable_server.stop, kill=True)
    await asyncio.to_thread(durable_server.start)
    async with redis_broker(url) as broker:
        assert counts(await stats(broker, sub.queue)) == {
            "depth": 100,
            "in_flight": 0,
            "consumers": 0,
        }


async def test_a_failed_ack_frees_its_slot_and_the_entry_comes_back(
    durable_server: RedisServer,
) -> None:
    """The ack fails while the server is down: it raises, gives its prefetch slot back
    (the window holds one), and the entry, no longer renewed, is claimed again after
    the lease by the same live consumer, as attempt 2."""
    sub = Subscription("outage", "demo.tick")
    async with redis_broker(durable_server.url(lease=1, block=0.05)) as broker:
        await broker.declare(sub)
        await broker.publish([tick(1)])
        stream = broker.consume(sub, Prefetch(1))
        delivery = await anext(stream)
        await asyncio.to_thread(durable_server.stop)
        with pytest.raises(ConnectionLostError):
            await delivery.ack()
        with pytest.raises(PublishError):
            await broker.publish([tick(2)])
        await asyncio.to_thread(durable_server.start)
        async with asyncio.timeout(30):
            again = await anext(stream)
        assert again.message.id == delivery.message.id and again.attempt == 2
        await again.ack()
        await stream.aclose()
        assert counts(await stats(broker, sub.queue)) == {
            "depth": 0,
            "in_flight": 0,
            "consumers": 0,
        }


async def test_workers_come_back_after_a_restart_that_lost_everything(
    volatile_server: RedisServer,
) -> None:
    """Without persistence a restart loses the queues. Workers reconnect, declare
    their queues again, and get what is published afterwards."""
    seen: Recorder[int] = Recorder()
    service = Service(f"reconnect-{uuid.uuid4().hex[:6]}")

    @service.on(Tick)
    async def record(event: Tick, ctx: Context) -> None:
        seen.add(event.n)

    queue = f"{service.name}.conformance.tick"
    async with connect(volatile_server.url(lease=1, block=0.2)) as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=1))
        await seen.wait_for(1)
        await asyncio.to_thread(volatile_server.restart)
        for _ in range(600):
            try:
                if [s.queue for s in await bus.inspect_queues([queue])] == [queue]:
                    break
            except BrokerError:
                pass
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the worker did not declare its queue again")
        await bus.publish(Tick(n=2))
        await seen.wait_for(2, timeout=30)
        assert seen.items == [1, 2]
        await worker.stop()


@pytest.fixture
def guarded_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from private_server(tmp_path, durable=False, password="right-pass")


async def test_a_wrong_password_is_refused_for_good_and_never_shown(
    guarded_server: RedisServer,
) -> None:
    wrong = guarded_server.url().replace("right-pass", "wrong-pass")
    with pytest.raises(BrokerError) as raised:
        await redis_broker(wrong).connect()
    assert not isinstance(raised.value, ConnectionLostError), "retrying will not help"
    assert "wrong-pass" not in str(raised.value) and "***" in str(raised.value)
    async with redis_broker(guarded_server.url()) as broker:
        sub = Subscription("auth", "demo.tick")
        await broker.declare(sub)
        await broker.publish([tick(1)])
        (delivery,) = await take(broker, sub, 1)
        assert number(delivery) == 1
        await delivery.ack()
