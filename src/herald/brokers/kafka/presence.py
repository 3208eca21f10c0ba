"""What every process reports about its queues, kept in one compacted topic of the
namespace (``[ns.]herald.state``, one partition) that :mod:`.inspection` reads.

Two kinds of records, the latest per key counting (a tombstone deletes):

- ``queue/<queue>``: a declared queue and its patterns (JSON ``{"patterns": [...]}``),
  written by ``declare`` and deleted when a transient queue is removed;
- ``seen/<instance>``: one broker instance's consumers (JSON ``{"expires": unix
  seconds, "queues": {queue: [consumers, held, settled]}}``): per queue, its consume
  loops (standbys of an exclusive queue too), the deliveries they hold (handed out,
  not settled) and those settled above the lowest unsettled offset of their
  partition (finished, but not committable yet). Written soon after a change (at
  most every :data:`THROTTLE` seconds) and every third of :data:`TTL` while it has
  any; deleted when the broker closes. A process that dies stops counting once its
  ``expires`` passed (the reader's clock against the writer's).

>>> reports = {
...     b"queue/a.q": b'{"patterns": ["x.y"]}',
...     b"queue/b.q": None,
...     b"seen/1": b'{"expires": 200, "queues": {"a.q": [1, 2, 0]}}',
...     b"seen/2": b'{"expires": 200, "queues": {"a.q": [1, 0, 3]}}',
...     b"seen/3": b'{"expires": 50, "queues": {"a.q": [1, 5, 5]}}',
... }
>>> state = State.parse(reports.items(), now=100)
>>> state.queues, state.seen
({'a.q': ('x.y',)}, {'a.q': Seen(consumers=2, held=2, settled=3)})
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ...tasks import cancel_and_wait
from .topology import Topology, read_through

__all__ = ["THROTTLE", "TTL", "Presence", "Seen", "State", "read_state"]

log = logging.getLogger("herald.kafka")
TTL = 15.0
"""Seconds an instance's report counts after it was written."""
THROTTLE = 0.1
"""Seconds between two writes of one instance's report, at least."""
QUEUE = "queue/"
SEEN = "seen/"


@dataclass(frozen=True, slots=True)
class Seen:
    """A queue as the live processes report it, added up."""

    consumers: int = 0
    held: int = 0
    settled: int = 0


@dataclass(slots=True)
class State:
    """The declared queues (with their patterns) and what live processes report."""

    queues: dict[str, tuple[str, ...]] = field(default_factory=dict)
    seen: dict[str, Seen] = field(default_factory=dict)

    @classmethod
    def parse(cls, latest: Iterable[tuple[bytes, bytes | None]], now: float) -> State:
        """From the latest record per key; records that do not parse are skipped."""
        state = cls()
        for raw_key, value in latest:
            key = raw_key.decode("utf-8", "replace")
            if value is None:
                continue
            try:
                data = json.loads(value)
            except ValueError:
                continue
            if not isinstance(data, dict):
                continue
            if key.startswith(QUEUE):
                patterns = data.get("patterns")
                if isinstance(patterns, list) and all(isinstance(p, str) for p in patterns):
                    state.queues[key[len(QUEUE) :]] = tuple(patterns)
            elif key.startswith(SEEN):
                state._add(data, now)
        return state

    def _add(self, report: dict[str, object], now: float) -> None:
        expires, queues = report.get("expires"), report.get("queues")
        if not isinstance(expires, int | float) or expires < now or not isinstance(queues, dict):
            return
        for queue, counts in queues.items():
            if not (
                isinstance(counts, list)
                and len(counts) == 3
                and all(type(n) is int and n >= 0 for n in counts)
            ):
                continue
            seen = self.seen.get(queue, Seen())
            self.seen[queue] = Seen(
                seen.consumers + counts[0], seen.held + counts[1], seen.settled + counts[2]
            )


async def read_state(reader: AIOKafkaConsumer, topic: str) -> State:
    """Read the state topic from its beginning to its end (``reader`` has no group)."""
    partition = TopicPartition(topic, 0)
    reader.assign([partition])
    start = (await reader.beginning_offsets([partition]))[partition]
    end = (await reader.end_offsets([partition]))[partition]
    latest: dict[bytes, bytes | None] = {}
    if end > start:
        reader.seek(partition, start)
        async for record in read_through(reader, {partition: end - 1}):
            if record.key is not None:
                latest[record.key] = record.value
    return State.parse(latest.items(), time.time())


class Presence:
    """Writes this broker instance's report and its queues' declarations.

    ``snapshot`` gives, per queue, ``[consumers, held, settled]`` now.
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topology: Topology,
        snapshot: Callable[[], dict[str, list[int]]],
        ttl: float = TTL,
    ) -> None:
        self.instance = uuid.uuid4().hex
        self.ttl = ttl
        self._producer = producer
        self._topology = topology
        self._snapshot = snapshot
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._written = False
        self._closed = False

    @property
    def topic(self) -> str:
        return self._topology.names.state

    async def ensure(self) -> None:
        await self._topology.ensure(
            [self.topic], partitions=1, configs={"cleanup.policy": "compact"}
        )

    async def declared(self, queue: str, patterns: Iterable[str]) -> None:
        """Record a declared queue and its patterns."""
        await self.ensure()
        value = json.dumps({"patterns": sorted(set(patterns))}).encode()
        await self._producer.send_and_wait(self.topic, value, key=f"{QUEUE}{queue}".encode())

    async def removed(self, queue: str) -> None:
        await self.ensure()
        await self._producer.send_and_wait(self.topic, None, key=f"{QUEUE}{queue}".encode())

    def changed(self) -> None:
        """Something a report counts changed: write soon."""
        if self._closed:
            return
        self._changed.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="herald:kafka:presence")

    async def close(self) -> None:
        """Stop writing and delete this instance's report."""
        self._closed = True
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._written:
            with contextlib.suppress(Exception):
                await self._write(None)

    async def _write(self, value: bytes | None) -> None:
        await self.ensure()
        key = f"{SEEN}{self.instance}".encode()
        await self._producer.send_and_wait(self.topic, value, key=key)

    async def _run(self) -> None:
        every = self.ttl / 3
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._changed.wait()
            self._changed.clear()
            snapshot = {q: counts for q, counts in self._snapshot().items() if any(counts)}
            if not snapshot and not self._written:
                return
            try:
                if snapshot:
                    report = {"expires": time.time() + self.ttl, "queues": snapshot}
                    await self._write(json.dumps(report, separators=(",", ":")).encode())
                    self._written = True
                else:
                    await self._write(None)
                    self._written = False
            except Exception as exc:  # the next round tries again
                log.debug("could not write this instance's presence: %s", exc)
            await asyncio.sleep(THROTTLE)
