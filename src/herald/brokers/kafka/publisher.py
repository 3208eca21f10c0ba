"""Publishing: each message to its event type's topic, keyed by its ordering key,
every record of a batch confirmed by the cluster (``acks=all``) before returning."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from ...errors import ErrorTable, MessageTooLargeError, PublishError
from ...message import Message
from .topology import MAX_TOPIC, Topology
from .wire import encode

__all__ = ["Publisher"]


class Publisher:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        topology: Topology,
        table: ErrorTable,
        url: str,
        limit: int,
    ) -> None:
        self._limit = limit
        self._producer = producer
        self._topology = topology
        self._table = table
        self._url = url

    async def publish(self, messages: Sequence[Message]) -> None:
        names = self._topology.names
        topics = {message.type: names.events(message.type) for message in messages}
        for event_type, topic in topics.items():
            if len(topic) > MAX_TOPIC:
                raise PublishError(
                    f"event type {event_type[:60]!r}... is too long for a Kafka topic name "
                    f"({len(topic)} characters with the prefix; at most {MAX_TOPIC})"
                )
        await self._topology.ensure(topics.values())
        await self.send([(topics[m.type], m, 1, 0) for m in messages])

    async def send(self, records: Sequence[tuple[str, Message, int, int]]) -> None:
        """Send ``(topic, message, attempt, due)`` records; return once all are stored."""
        futures = []
        for topic, message, attempt, due in records:
            key, headers = encode(message, attempt=attempt, due=due)
            try:
                with self._table.converting(f"publishing to {topic}", PublishError):
                    futures.append(
                        await self._producer.send(topic, message.body, key=key, headers=headers)
                    )
            except PublishError as exc:
                self._too_large(exc, message)
                raise
        if not futures:
            return
        results = await asyncio.gather(*futures, return_exceptions=True)
        for (_, message, _, _), result in zip(records, results, strict=True):
            if isinstance(result, BaseException):
                try:
                    with self._table.converting("publishing", PublishError):
                        raise result
                except PublishError as exc:
                    self._too_large(exc, message)
                    raise

    def _too_large(self, exc: PublishError, message: Message) -> None:
        if isinstance(exc.__cause__, MessageSizeTooLargeError):
            raise MessageTooLargeError(
                message.id, len(message.body), self._limit, self._url
            ) from exc.__cause__
