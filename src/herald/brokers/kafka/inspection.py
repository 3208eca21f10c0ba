"""Queue statistics (:class:`herald.QueueInspection`) from the group's committed offsets
and what the live processes report (:mod:`.presence`).

A queue's group reads the events topics its patterns match and its retry topics.
Its lag, added up over their partitions, is the end offset less the committed one
(the first retained when the group committed nothing there yet). The lag counts
what waits, what consumers hold, and what they settled above a lower unsettled
offset of its partition (not committable yet). The processes report the last two,
so:

- ``depth``: the lag less what the live consumers hold and settled-uncommitted;
  retries waiting out their delay, and what a dead process held, count as waiting;
- ``in_flight``: the deliveries the live consumers hold (at most the lag);
- ``consumers``: the consume loops of the live processes, standbys of an exclusive
  queue too (a killed process stops counting within :data:`.presence.TTL`);
- ``oldest_age``: 0 when nothing waits; else seconds since the oldest record at a
  committed offset was written (the first the group has not committed, which may
  be one a consumer holds; a retry copy counts from when it was written).

The queues are those declared (``queue/`` records of the state topic); a transient
queue is gone from the listing once its consumer stopped. The processes' reports
lag their changes by up to :data:`.presence.THROTTLE` seconds plus a round trip.

Cost of one call: the state topic read from its beginning, the partitions of the
queues' topics described and read from their reported end to their real end (on
Tansu the high watermark can stop short of it), one ``OffsetFetch`` per queue, and,
for a queue with messages waiting, the batch at each committed offset below the end.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from ...capabilities import QueueStats
from ...errors import ErrorTable
from .connection import consumer_options
from .presence import Presence, Seen, read_state
from .settings import KafkaSettings
from .topology import Topology, read_through

__all__ = ["Inspector", "depth_of"]


def depth_of(lag: int, seen: Seen) -> tuple[int, int]:
    """``(depth, in_flight)`` from a queue's lag and what its consumers report.

    >>> depth_of(5, Seen(1, 2, 0)), depth_of(4, Seen(1, 1, 2)), depth_of(1, Seen(1, 3, 0))
    ((3, 2), (1, 1), (0, 1))
    """
    in_flight = min(seen.held, lag)
    return max(0, lag - in_flight - seen.settled), in_flight


class Inspector:
    def __init__(
        self,
        settings: KafkaSettings,
        topology: Topology,
        admin: AIOKafkaAdminClient,
        presence: Presence,
        table: ErrorTable,
    ) -> None:
        self._settings = settings
        self._topology = topology
        self._admin = admin
        self._presence = presence
        self._table = table

    async def inspect_queues(self, queues: Collection[str] | None) -> list[QueueStats]:
        topology, names = self._topology, self._topology.names
        reader = AIOKafkaConsumer(**consumer_options(self._settings, None))
        with self._table.converting("inspecting queues"):
            await self._presence.ensure()
            await reader.start()
            try:
                state = await read_state(reader, names.state)
                wanted = sorted(state.queues if queues is None else set(queues) & set(state.queues))
                if not wanted:
                    return []
                existing = await topology.topics()
                topics: dict[str, list[str]] = {}
                for queue in wanted:
                    matcher = re.compile(names.subscription_regex(state.queues[queue], queue))
                    topics[queue] = [t for t in existing if matcher.fullmatch(t)]
                described = await topology.describe(
                    sorted({t for ts in topics.values() for t in ts})
                )
                partitions = {
                    d["topic"]: [
                        TopicPartition(d["topic"], p["partition"]) for p in d["partitions"]
                    ]
                    for d in described
                }
                every = [tp for ps in partitions.values() for tp in ps]
                if every:
                    reader.assign(every)  # offsets are looked up faster for assigned partitions
                starts = await reader.beginning_offsets(every) if every else {}
                ends = await self._ends(reader, starts)
                found = []
                for queue in wanted:
                    mine = [tp for t in topics[queue] for tp in partitions.get(t, ())]
                    committed = (
                        await self._admin.list_consumer_group_offsets(
                            names.group(queue), partitions=mine
                        )
                        if mine
                        else {}
                    )
                    unread: dict[TopicPartition, int] = {}
                    for tp in mine:
                        hit = committed.get(tp)
                        start = hit.offset if hit is not None and hit.offset >= 0 else starts[tp]
                        if ends[tp] > start:
                            unread[tp] = start
                    lag = sum(ends[tp] - start for tp, start in unread.items())
                    seen = state.seen.get(queue, Seen())
                    depth, in_flight = depth_of(lag, seen)
                    age = await self._oldest_age(reader, unread) if depth else 0.0
                    found.append(
                        QueueStats(
                            queue=queue,
                            depth=depth,
                            in_flight=in_flight,
                            consumers=seen.consumers,
                            oldest_age=age,
                        )
                    )
                return found
            finally:
                await reader.stop()

    @staticmethod
    async def _oldest_age(
        reader: AIOKafkaConsumer, unread: dict[TopicPartition, int]
    ) -> float | None:
        """Seconds since the oldest record at a committed offset was written (it may
        be one a consumer holds); None when none is left to read."""
        reader.assign(list(unread))
        for tp, offset in unread.items():
            reader.seek(tp, offset)
        first: dict[TopicPartition, int] = {}
        async for record in read_through(reader, unread):
            tp = TopicPartition(record.topic, record.partition)
            first.setdefault(tp, record.timestamp)
        if not first:
            return None
        return max(0.0, time.time() - min(first.values()) / 1000)

    @staticmethod
    async def _ends(
        reader: AIOKafkaConsumer, starts: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """The real end of each partition: past the last record of the batch at the
        reported high watermark (see :func:`.topology.read_through`)."""
        if not starts:
            return {}
        ends: dict[TopicPartition, int] = await reader.end_offsets(list(starts))
        last = {tp: end - 1 for tp, end in ends.items() if end > starts[tp]}
        if not last:
            return ends
        reader.assign(list(last))
        for tp, offset in last.items():
            reader.seek(tp, offset)
        async for record in read_through(reader, last):
            tp = TopicPartition(record.topic, record.partition)
            ends[tp] = max(ends[tp], record.offset + 1)
        return ends
