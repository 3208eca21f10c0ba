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
from .batch import Batcher, EntryError
from .topology import Topology
from .wire import MAX_SIZE, encode, group_id, token

__all__ = ["Publisher", "entry_of"]


def entry_of(message: Message, fifo: bool, *, dedup: str | None = None) -> tuple[dict[str, Any], int]:
    """A ``PublishBatch``/``SendMessageBatch`` entry for ``message`` (without ``Id``) and
    its size as SQS counts it; :class:`herald.MessageTooLargeError` over 256 KiB."""
    encoded = encode(message)
    if encoded.size > MAX_SIZE:
        raise MessageTooLargeError(message.id, encoded.size, MAX_SIZE, "sqs:// (body and attributes)")
    entry: dict[str, Any] = {"MessageAttributes": encoded.attributes}
    if fifo:
        entry["MessageGroupId"] = group_id(message)
        entry["MessageDeduplicationId"] = dedup or token(message.id)
    return entry | {"_body": encoded.body}, encoded.size


class Publisher:
    """Publishes batches to the namespace topic."""

    def __init__(self, sns: Any, topology: Topology, table: ErrorTable) -> None:
        self._sns = sns
        self._topology = topology
        self._table = table
        self._batcher: Batcher | None = None

    async def publish(self, messages: Sequence[Message]) -> None:
        fifo = self._topology.names.fifo
        entries = [entry_of(message, fifo) for message in messages]
        batcher = await self._batch()
        results = await asyncio.gather(
            *(batcher.submit(_as_publish(entry), size) for entry, size in entries),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if not failures:
            return
        first = failures[0]
        if isinstance(first, EntryError):
            raise PublishError(
                f"{len(failures)} of {len(messages)} message(s) not published: {first}"
            ) from first
        raise first

    async def _batch(self) -> Batcher:
        if self._batcher is None:
            topic = await self._topology.topic()

            async def call(entries: list[dict[str, Any]]) -> dict[str, Any]:
                reply: dict[str, Any] = await self._sns.publish_batch(
                    TopicArn=topic, PublishBatchRequestEntries=entries
                )
                return reply

            self._batcher = Batcher(call, "publishing", self._table, PublishError)
        return self._batcher

    def forget(self) -> None:
        """The topic may have changed (re-created): look it up again."""
        self._batcher = None


def _as_publish(entry: dict[str, Any]) -> dict[str, Any]:
    publish = {k: v for k, v in entry.items() if k != "_body"}
    publish["Message"] = entry["_body"]
    return publish
