"""``RetainedHistory``: Kafka keeps what was published, so a queue created later can
be given what it missed.

``backfill`` copies, for every events topic the queue's patterns match, the records
of the types they match from the oldest retained (or the first at or after
``since``, by record timestamp) up to the queue's committed offset into tier 0 of
the queue's retry topics, as they are (headers, key, body; Herald's retry
bookkeeping headers dropped). Only that queue's group reads them, in order per
partition; what lies past its committed offset it receives anyway, so nothing
comes twice.
"""

from __future__ import annotations

import re
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from ...broker import Subscription
from ...errors import ErrorTable
from ...headers import ATTEMPT
from ...topic import matches
from .connection import consumer_options
from .settings import KafkaSettings
from .topology import Topology
from .wire import DUE, decode

__all__ = ["History"]

_DROPPED = frozenset((ATTEMPT, DUE))


class History:
    def __init__(
        self,
        settings: KafkaSettings,
        topology: Topology,
        producer: AIOKafkaProducer,
        table: ErrorTable,
    ) -> None:
        self._settings = settings
        self._topology = topology
        self._producer = producer
        self._table = table

    async def backfill(self, subscription: Subscription, since: datetime | None) -> int:
        names, topology = self._topology.names, self._topology
        matcher = re.compile(names.subscription_regex(subscription.patterns, "-"))
        topics = [t for t in await topology.topics() if names.event_type(t) and matcher.match(t)]
        if not topics:
            return 0
        partitions = [
            TopicPartition(described["topic"], p["partition"])
            for described in await topology.describe(topics)
            for p in described["partitions"]
        ]
        target = names.retry(subscription.queue, 0)
        await topology.ensure([target])
        group = names.group(subscription.queue)
        reader = AIOKafkaConsumer(**consumer_options(self._settings, group))
        copied = 0
        with self._table.converting(f"backfilling {subscription.queue}"):
            await reader.start()
            try:
                stops = {tp: await reader.committed(tp) for tp in partitions}
                since_ms = 0 if since is None else int(since.timestamp() * 1000)
                if since is None:
                    starts = await reader.beginning_offsets(partitions)
                else:
                    found = await reader.offsets_for_times({tp: since_ms for tp in partitions})
                    starts = {
                        tp: hit.offset
                        for tp, hit in found.items()
                        if hit is not None and hit.offset >= 0 and hit.timestamp >= since_ms
                    }
                ranges = {
                    tp: (starts[tp], stop)
                    for tp, stop in stops.items()
                    if stop is not None and tp in starts and starts[tp] < stop
                }
                if not ranges:
                    return 0
                reader.assign(list(ranges))
                for tp, (start, _) in ranges.items():
                    reader.seek(tp, start)
                while ranges:
                    batch = await reader.getmany(*ranges, timeout_ms=1000)
                    if not any(batch.values()):
                        break
                    futures = []
                    for tp, records in batch.items():
                        stop = ranges[tp][1] if tp in ranges else -1
                        for record in records:
                            if record.offset >= stop:
                                ranges.pop(tp, None)
                                break
                            if record.offset + 1 >= stop:
                                ranges.pop(tp, None)
                            if record.timestamp < since_ms:
                                continue  # a server that does not look offsets up by time
                            headers = [(k, v) for k, v in record.headers or () if k not in _DROPPED]
                            if not self._wanted(subscription, tp.topic, record, headers):
                                continue
                            futures.append(
                                await self._producer.send(
                                    target, record.value, key=record.key, headers=headers
                                )
                            )
                    for future in futures:
                        await future
                    copied += len(futures)
            finally:
                await reader.stop()
        return copied

    def _wanted(
        self,
        subscription: Subscription,
        topic: str,
        record: ConsumerRecord[bytes, bytes],
        headers: list[tuple[str, bytes]],
    ) -> bool:
        """Whether the queue takes the record (its family's topic holds other types
        too); a record that cannot be rebuilt is copied, to be dead-lettered."""
        default = self._topology.names.event_type(topic)
        decoded = decode(record.key, headers, record.value or b"", default)
        event_type = decoded.message.type
        return decoded.error is not None or any(
            matches(p, event_type) for p in subscription.patterns
        )
