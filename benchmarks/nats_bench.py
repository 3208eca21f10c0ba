"""NATS JetStream suite: Herald ``nats://`` against raw nats-py and FastStream.

* ``nats-py`` (baseline): a file-storage stream on ``bench<run>.raw.>``; a throughput
  window is a ``gather`` of ``js.publish`` calls (each waits for its JetStream ack,
  so acks are pipelined); the consumer is a durable pull consumer with explicit
  acks, ``fetch(batch=64)`` in a loop, acking each message after handling it.
* ``faststream``: ``NatsBroker`` with a JetStream pull subscriber, as its docs
  recommend for durable work: a file-storage ``JStream``, a durable consumer with
  explicit acks (``max_ack_pending`` 1024), ``PullSub(batch_size=64)``; FastStream
  acks each message after its handler returned. Publishing is ``broker.publish(...,
  stream=...)`` (a JetStream publish awaiting its PubAck), gathered per window.
* ``herald``: see :mod:`benchmarks.herald_contender`. Unlike the raw client it sends
  the CloudEvents attributes as headers and a ``Nats-Msg-Id`` (JetStream
  de-duplication) with every event, keeps a second (replay) consumer per queue, and
  decodes each body into a pydantic model.

The durable work is the same on both sides: a file-storage stream, every publish
waits for its PubAck, every message is acked (a plain ``+ACK`` publish, no
``ack_sync`` on either side) after it was handled. What the raw client does less:
its events carry no headers (Herald's seven, about 250 bytes, double each stored
message and give the server a de-duplication entry per event to keep); its consumer
may have 1024 unacked messages where Herald's has its prefetch (64); it handles one
message at a time with ``json.loads`` (no envelope, no validation, no middleware, no
concurrency); and it has no replay consumer, no leases and no presence reports.

Targets (Herald): throughput >= nats-py and >= 2x FastStream; p99 <= nats-py + 1 ms.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StorageType

from .faststream_contender import BenchModel, FastStreamContender
from .harness import LATENCY, THROUGHPUT, Contender, Publisher, Recorder, make_body, parse_body
from .herald_contender import HeraldContender
from .report import faster_than, p99_within
from .suite import Suite

__all__ = ["SUITE", "FastStreamNATS", "HeraldNATS", "NatsPyContender"]

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
                except TimeoutError:  # nats-py raises its own and asyncio's
                    continue
                for message in messages:
                    recorder.handled(*parse_body(message.data))
                    await message.ack()
            await subscription.unsubscribe()

    async def cleanup(self) -> None:
        async with self._jetstream() as js:
            await js.delete_stream(self._stream)


def _faststream() -> Any:
    """faststream.nats, imported on first use: without it only FastStream is unavailable."""
    return importlib.import_module("faststream.nats")


class FastStreamNATS(FastStreamContender):
    max_events = 10_000  # a few hundred events/s on a busy host: keep within the timeout

    @property
    def _stream(self) -> str:
        return f"BENCH{self.run_id}FS"

    @property
    def _subject(self) -> str:
        return f"bench{self.run_id}.faststream.bench.event"

    def broker(self) -> Any:
        return _faststream().NatsBroker(
            NATS_URL, logger=None, connect_timeout=5, max_reconnect_attempts=0
        )

    def _jstream(self) -> Any:
        return _faststream().JStream(
            self._stream, subjects=[self._subjects], storage=StorageType.FILE
        )

    @property
    def _subjects(self) -> str:
        return f"bench{self.run_id}.faststream.>"

    def target(self) -> dict[str, Any]:
        # nats-py's JetStream publish timeout (FastStream's own is 0.5 s)
        return {"subject": self._subject, "stream": self._stream, "timeout": 5.0}

    async def prepare(self, broker: Any) -> None:
        # what the subscriber declares when it starts (the publisher starts nothing)
        client = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=0)
        try:
            await client.jetstream().add_stream(
                name=self._stream, subjects=[self._subjects], storage=StorageType.FILE
            )
        finally:
            await client.drain()

    def subscribe(self, broker: Any, handle: Callable[[BenchModel], Any]) -> None:
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1024)
        broker.subscriber(
            self._subject,
            stream=self._jstream(),
            durable="bench",
            config=config,
            pull_sub=_faststream().PullSub(batch_size=BATCH, timeout=0.5),
        )(handle)

    async def cleanup(self) -> None:
        client = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=0)
        try:
            await client.jetstream().delete_stream(self._stream)
        finally:
            await client.drain()


SUITE = Suite(
    "nats",
    (NatsPyContender, FastStreamNATS, HeraldNATS),
    baseline="nats-py",
    targets={
        ("herald", THROUGHPUT): [faster_than("nats-py"), faster_than("faststream", 2.0)],
        ("herald", LATENCY): [p99_within("nats-py", 1.0)],
    },
)
