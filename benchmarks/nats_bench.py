"""NATS JetStream suite: Herald ``nats://`` against raw nats-py.

* ``nats-py`` (baseline): a file-storage stream on ``bench<run>.raw.>``; a throughput
  window is a ``gather`` of ``js.publish`` calls (each waits for its JetStream ack,
  so acks are pipelined); the consumer is a durable pull consumer with explicit
  acks, ``fetch(batch=64)`` in a loop, acking each message after handling it.
* ``herald``: see :mod:`benchmarks.herald_contender`.

Targets (Herald), by analogy with RabbitMQ: throughput >= nats-py; p99 <= nats-py + 1 ms.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, StorageType

from .harness import LATENCY, THROUGHPUT, Contender, Publisher, Recorder, make_body, parse_body
from .herald_contender import HeraldContender
from .report import faster_than, p99_within
from .suite import Suite

__all__ = ["SUITE", "HeraldNATS", "NatsPyContender"]

NATS_URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")
BATCH = 64


class HeraldNATS(HeraldContender):
    def url(self) -> str:
        return f"{NATS_URL}?namespace=bench{self.run_id}"


class _NatsPublisher:
    def __init__(self, js: Any, subject: str) -> None:
        self._js = js
        self._subject = subject

    async def publish(self, events: Sequence[tuple[int, int]]) -> None:
        await asyncio.gather(
            *(self._js.publish(self._subject, make_body(seq, sent_ns)) for seq, sent_ns in events)
        )


class NatsPyContender(Contender):
    name = "nats-py"

    @property
    def _stream(self) -> str:
        return f"BENCH{self.run_id}RAW"

    @property
    def _subject(self) -> str:
        return f"bench{self.run_id}.raw.bench.event"

    @asynccontextmanager
    async def _jetstream(self) -> AsyncIterator[Any]:
        client = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=0)
        try:
            yield client.jetstream()
        finally:
            await client.drain()

    async def _ensure_stream(self, js: Any) -> None:
        await js.add_stream(
            name=self._stream,
            subjects=[f"bench{self.run_id}.raw.>"],
            storage=StorageType.FILE,
        )

    async def check(self) -> None:
        async with self._jetstream() as js:
            await js.account_info()

    def publisher(self) -> AbstractAsyncContextManager[Publisher]:
        return self._publisher()

    @asynccontextmanager
    async def _publisher(self) -> AsyncIterator[Publisher]:
        async with self._jetstream() as js:
            await self._ensure_stream(js)
            yield _NatsPublisher(js, self._subject)

    async def consume(self, recorder: Recorder, ready: Callable[[], None]) -> None:
        async with self._jetstream() as js:
            await self._ensure_stream(js)
            subscription = await js.pull_subscribe(
                self._subject,
                durable="bench",
                stream=self._stream,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1024),
            )
            ready()
            while not recorder.complete:
                try:
                    messages = await subscription.fetch(BATCH, timeout=0.5)
                except nats.errors.TimeoutError:
                    continue
                for message in messages:
                    recorder.handled(*parse_body(message.data))
                    await message.ack()
            await subscription.unsubscribe()

    async def cleanup(self) -> None:
        async with self._jetstream() as js:
            await js.delete_stream(self._stream)


SUITE = Suite(
    "nats",
    (NatsPyContender, HeraldNATS),
    baseline="nats-py",
    targets={
        ("herald", THROUGHPUT): [faster_than("nats-py")],
        ("herald", LATENCY): [p99_within("nats-py", 1.0)],
    },
)
