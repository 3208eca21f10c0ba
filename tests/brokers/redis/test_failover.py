"""What a Sentinel failover looks like to Herald, on two private servers: the master
in the URL is demoted to a replica, the replica promoted (what Sentinel does, done by
hand). Publishing to the demoted server fails with a clear error, never silently;
what it confirmed before (and what reached the replica) is on the promoted server.
See docs/redis.md, "Sentinel failover and Redis Cluster"."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from herald.broker import Subscription
from herald.errors import BrokerError

from .conftest import raw_client, redis_broker
from .helpers import number, take, tick
from .server import RedisServer, private_server

pytestmark = pytest.mark.redis


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for master in private_server(tmp_path / "a", durable=False):
        for replica in private_server(tmp_path / "b", durable=False):
            yield master, replica


async def test_publishing_to_a_demoted_master_fails_and_the_promoted_replica_has_the_events(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = pair
    async with raw_client(master.port) as client:
        await client.config_set("repl-diskless-sync-delay", 0)  # 5 s by default
    async with raw_client(replica.port) as client:
        await client.replicaof("127.0.0.1", master.port)
    sub = Subscription("failover", "demo.tick")
    async with redis_broker(master.url("f")) as broker:
        await broker.declare(sub)
        await broker.publish([tick(1), tick(2)])
        async with raw_client(master.port) as client:
            for _ in range(100):  # the replica's first sync, then the writes
                if await client.execute_command("WAIT", 1, 100) == 1:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the replica never acknowledged the writes")
        async with raw_client(replica.port) as client:
            await client.replicaof("NO", "ONE")
        async with raw_client(master.port) as client:
            await client.replicaof("127.0.0.1", replica.port)
        with pytest.raises(BrokerError, match="read only replica"):
            await broker.publish([tick(3)])
    async with redis_broker(replica.url("f")) as promoted:
        got = await take(promoted, sub, 2)
        assert sorted(number(d) for d in got) == [1, 2]
        await promoted.publish([tick(4)])
        (late,) = await take(promoted, sub, 1)
        assert number(late) == 4
