"""Publishing: SNS ``PublishBatch`` to the namespace topic, ten messages a call.

SNS delivers each message to every queue whose subscription filter lets its type
through, so a publish is one call per ten messages whatever the fan-out. A publish
returns once SNS confirmed every entry: SNS then owns the delivery to the queues
(on AWS it retries an SQS endpoint for days). On a FIFO topic each message carries
``MessageGroupId`` = its key and ``MessageDeduplicationId`` = its id, so a message
published twice within five minutes (an outbox resending after a crash) is stored once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ...errors import ErrorTable, MessageTooLargeError, PublishError
from ...message import Message
from .batch import BATCH
from .topology import Topology
from .wire import MAX_SIZE, encode, group_id, token

__all__ = ["LANES", "Publisher", "entry_of"]

LANES = 8


def entry_of(
    message: Message, fifo: bool, *, dedup: str | None = None, limit: int = MAX_SIZE
) -> tuple[dict[str, Any], int]:
    """A ``PublishBatch``/``SendMessageBatch`` entry for ``message`` (without ``Id``) and
    its size as SQS counts it; :class:`herald.MessageTooLargeError` over ``limit``."""
    encoded = encode(message)
    if encoded.size > limit:
        raise MessageTooLargeError(message.id, encoded.size, limit, "sqs:// (body and attributes)")
    entry: dict[str, Any] = {"MessageAttributes": encoded.attributes}
    if fifo:
        entry["MessageGroupId"] = group_id(message)
        entry["MessageDeduplicationId"] = dedup or token(message.id)
    return entry | {"_body": encoded.body}, encoded.size


class Publisher:
    """Publishes batches to the namespace topic.

    The messages of one publish go out in :data:`LANES` lanes by key, each lane's
    calls one after another and the lanes at once: the messages of one key reach
    SNS in the order given (which a FIFO topic keeps), and a large publish is not
    one call at a time.
    """

    def __init__(self, sns: Any, topology: Topology, table: ErrorTable) -> None:
        self._sns = sns
        self._topology = topology
        self._table = table

    async def publish(self, messages: Sequence[Message]) -> None:
        fifo = self._topology.names.fifo
        lanes: dict[int, list[tuple[dict[str, Any], int]]] = {}
        for message in messages:
            entry, size = entry_of(message, fifo)
            lane = hash(group_id(message)) % LANES
            lanes.setdefault(lane, []).append((_as_publish(entry), size))
        topic = await self._topology.topic()
        results = await asyncio.gather(
            *(self._lane(topic, entries) for entries in lanes.values()), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]

    async def _lane(self, topic: str, entries: list[tuple[dict[str, Any], int]]) -> None:
        for chunk in _chunks(entries):
            batch = [{**entry, "Id": str(n)} for n, entry in enumerate(chunk)]
            with self._table.converting("publishing", PublishError):
                reply = await self._sns.publish_batch(
                    TopicArn=topic, PublishBatchRequestEntries=batch
                )
            failed = reply.get("Failed") or []
            if failed:
                first = failed[0]
                raise PublishError(
                    f"SNS refused {len(failed)} of {len(batch)} message(s): "
                    f"{first.get('Code', '')}: {first.get('Message', '')}"
                )


def _chunks(entries: list[tuple[dict[str, Any], int]]) -> list[list[dict[str, Any]]]:
    """Entries in calls of at most ten and 256 KiB together."""
    chunks: list[list[dict[str, Any]]] = [[]]
    total = 0
    for entry, size in entries:
        if chunks[-1] and (len(chunks[-1]) == BATCH or total + size > MAX_SIZE):
            chunks.append([])
            total = 0
        chunks[-1].append(entry)
        total += size
    return chunks


def _as_publish(entry: dict[str, Any]) -> dict[str, Any]:
    publish = {k: v for k, v in entry.items() if k != "_body"}
    publish["Message"] = entry["_body"]
    return publish
