"""``RetainedHistory``: Kafka keeps what was published, so a queue created later can
start with what it missed.

A queue's group seen for the first time normally gets the end offset of every topic
its patterns match, committed (:meth:`.consumer.QueueConsumer.declare`). Backfill
commits, instead, the offset of the oldest retained record, or of the first stored
at or after ``since`` (:func:`first_offsets`): the group then reads history and live
records in each partition's one order, every record once, in order per key. The
offsets committed at the first declaration are the durable record: a restart or a
second replica finds them and starts nothing over (:func:`claim_start`).

Replicas that start at once may all find the group new. Kafka has no "commit if
none": each re-reads the group's mark just before committing, and a server takes a
commit from outside the group only while the group has no member, so a replica that
finds the group taken (a member joined) keeps its offsets. What is left is two
first declarations committing within one round trip, the later overwriting the
earlier: no member was consuming yet (a member's start needs the mark committed,
then a join that the overwrite would have failed on), and the later one's offsets
were computed before it found the mark still missing, so before the earlier
declaration returned: each record published after a declaration returned is at or
after either. Only records published during the declarations may be passed over by
one and taken by the other (backfill: both compute the same history start).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError

from .topology import read_to_end

__all__ = ["CLAIM_PATIENCE", "claim_start", "first_offsets"]

CLAIM_PATIENCE = 10.0
"""Seconds a first declaration retries its commit while the group has members but
no start offsets yet (seen only while a rebalance settles)."""


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


async def claim_start(
    probe: AIOKafkaConsumer,
    mark: TopicPartition,
    starts: Mapping[TopicPartition, int],
    patience: float = CLAIM_PATIENCE,
) -> bool:
    """Commit a new group's start offsets and its ``mark`` (offset 0) unless another
    declaration committed the mark first; return whether these offsets were
    committed. ``probe`` is not a member of the group (it is assigned partitions):
    its commit is refused while the group has members, which is how a replica that
    found the group new learns another one got there and joined first."""
    deadline = time.monotonic() + patience
    while await probe.committed(mark) is None:
        try:
            await probe.commit({**starts, mark: 0})
        except CommitFailedError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.1)
        else:
            return True
    return False
