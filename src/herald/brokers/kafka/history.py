"""``RetainedHistory``: Kafka keeps what was published, so a queue created later can
start with what it missed.

A queue's group seen for the first time normally gets the end offset of every topic
its patterns match, committed (:meth:`.consumer.QueueConsumer.declare`). Backfill
commits, instead, the offset of the oldest retained record, or of the first stored
at or after ``since`` (:func:`first_offsets`): the group then reads history and live
records in each partition's one order, every record once, in order per key. The
offsets committed at the first declaration are the durable record: a restart or a
second replica finds them and starts nothing over.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from .topology import read_to_end

__all__ = ["first_offsets"]


async def first_offsets(
    reader: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    since: datetime | None,
    ends: Mapping[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """Per assigned partition, the offset of its oldest retained record, or of its
    first with a timestamp at or after ``since`` (its end when none is)."""
    begins: dict[TopicPartition, int] = await reader.beginning_offsets(partitions)
    if since is None:
        return begins
    since_ms = int(since.timestamp() * 1000)
    found = await reader.offsets_for_times({tp: since_ms for tp in partitions})
    starts = {tp: ends[tp] for tp in partitions}
    unsure = []
    for tp, hit in found.items():
        if hit is None or hit.offset < 0:
            continue
        starts[tp] = hit.offset
        if hit.timestamp < since_ms:  # a server that does not look offsets up by time
            unsure.append(tp)
            reader.seek(tp, hit.offset)
    if unsure:
        first: dict[TopicPartition, int] = {}
        async for record in read_to_end(reader, unsure):
            tp = TopicPartition(record.topic, record.partition)
            if record.timestamp >= since_ms and tp not in first:
                first[tp] = record.offset
        for tp in unsure:
            starts[tp] = first.get(tp, ends[tp])
    return starts
