"""Redis Streams suite: Herald ``redis://`` against raw redis-py and FastStream.

* ``redis-py`` (baseline): one stream key ``bench<run>:raw:stream`` and a consumer
  group; a throughput window is one non-transactional pipeline of ``XADD`` commands
  (their replies are the confirmations); a paced latency event is one ``XADD``, on a
  ``BlockingConnectionPool`` (concurrent calls wait for one of 100 connections rather
  than fail); the consumer loops ``XREADGROUP COUNT 64 BLOCK 100`` and, after
  handling a batch, ``XACK``s its ids in one call (no ``XDEL``: entries stay).
* ``faststream``: ``RedisBroker`` with a stream subscriber in a consumer group, as its
  docs recommend for acknowledged work: ``StreamSub(group=..., consumer=...,
  max_records=64)``; FastStream ``XACK``s each message after its handler returned.
  Publishing is ``broker.publish(..., stream=...)`` (one ``XADD``), gathered per window,
  at most 100 at once (its connection pool fails beyond).
* ``herald``: see :mod:`benchmarks.herald_contender`. It does more durable work than
  the raw client: every publish is a Lua script that routes to each bound queue's
  stream (checking the bindings' version), each entry carries the CloudEvents
  attributes as fields besides the body, reads go through a script that keeps the
  consumer within its prefetch window (messages and bytes), an ack is ``XACK`` plus
  ``XDEL`` (the stream keeps only unsettled entries), a heartbeat renews what the
  consumer holds, and each body is decoded into a pydantic model.

Targets (Herald): throughput >= 0.8x redis-py (the durable work above) and >= 2x
FastStream; p99 <= redis-py + 1 ms.
The server runs without persistence here, so "durable" means "in the server".
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import redis.asyncio
import redis.exceptions

from .faststream_contender import BenchModel, FastStreamContender
from .harness import LATENCY, THROUGHPUT, Contender, Publisher, Recorder, make_body, parse_body
from .herald_contender import HeraldContender
from .report import faster_than, p99_within
from .suite import Suite

__all__ = ["SUITE", "FastStreamRedis", "HeraldRedis", "RedisPyContender"]

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BATCH = 64
GROUP = "bench"


class HeraldRedis(HeraldContender):
    def url(self) -> str:
        return f"{REDIS_URL}?namespace=bench{self.run_id}"


class _RedisPublisher:
    def __init__(self, client: Any, key: str) -> None:
        self._client = client
        self._key = key

    async def publish(self, events: Sequence[tuple[int, int]]) -> None:
        if len(events) == 1:
            seq, sent_ns = events[0]
            await self._client.xadd(self._key, {"body": make_body(seq, sent_ns)})
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for seq, sent_ns in events:
                pipe.xadd(self._key, {"body": make_body(seq, sent_ns)})
            await pipe.execute()


class RedisPyContender(Contender):
    name = "redis-py"

    @property
    def _key(self) -> str:
        return f"bench{self.run_id}:raw:stream"

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[Any]:
        pool = redis.asyncio.BlockingConnectionPool.from_url(REDIS_URL, max_connections=100)
        client = redis.asyncio.Redis(connection_pool=pool)
        try:
            yield client
        finally:
            await client.aclose()

    async def check(self) -> None:
        async with self._client() as client:
            await client.ping()

    def publisher(self) -> AbstractAsyncContextManager[Publisher]:
        return self._publisher()

    @asynccontextmanager
    async def _publisher(self) -> AsyncIterator[Publisher]:
        async with self._client() as client:
            await client.ping()
            yield _RedisPublisher(client, self._key)

    async def consume(self, recorder: Recorder, ready: Callable[[], None]) -> None:
        async with self._client() as client:
            try:
                await client.xgroup_create(self._key, GROUP, id="$", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            ready()
            while not recorder.complete:
                reply = await client.xreadgroup(
                    GROUP, "consumer-1", {self._key: ">"}, count=BATCH, block=100
                )
                ids = []
                for _, entries in reply or ():
                    for entry_id, fields in entries:
                        recorder.handled(*parse_body(fields[b"body"]))
                        ids.append(entry_id)
                if ids:
                    await client.xack(self._key, GROUP, *ids)

    async def cleanup(self) -> None:
        async with self._client() as client:
            await client.delete(self._key)


def _faststream() -> Any:
    """faststream.redis, imported on first use: without it only FastStream is unavailable."""
    return importlib.import_module("faststream.redis")


class FastStreamRedis(FastStreamContender):
    in_flight = 100  # as many as redis-py's pool holds (it fails beyond, not waits)
    max_events = 5000  # a few hundred events/s here: 20,000 would outlast the timeout

    @property
    def _key(self) -> str:
        return f"bench{self.run_id}:faststream:stream"

    def broker(self) -> Any:
        return _faststream().RedisBroker(REDIS_URL, logger=None)

    def target(self) -> dict[str, Any]:
        return {"stream": self._key}

    def subscribe(self, broker: Any, handle: Callable[[BenchModel], Any]) -> None:
        stream = _faststream().StreamSub(
            self._key, group=GROUP, consumer="consumer-1", max_records=BATCH
        )
        broker.subscriber(stream=stream)(handle)

    async def cleanup(self) -> None:
        async with RedisPyContender(self.run_id)._client() as client:
            await client.delete(self._key)


SUITE = Suite(
    "redis",
    (RedisPyContender, FastStreamRedis, HeraldRedis),
    baseline="redis-py",
    targets={
        ("herald", THROUGHPUT): [faster_than("redis-py", 0.8), faster_than("faststream", 2.0)],
        ("herald", LATENCY): [p99_within("redis-py", 1.0)],
    },
)
