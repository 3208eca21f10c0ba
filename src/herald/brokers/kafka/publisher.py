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
        futures: list[asyncio.Future[object]] = []
        send = self._producer.send
        where = f"publishing to {', '.join(sorted({r[0] for r in records}))[:300]}"
        try:
            with self._table.converting(where, PublishError):
                for topic, message, attempt, due in records:
                    key, headers = encode(message, attempt=attempt, due=due)
                    futures.append(await send(topic, message.body, key=key, headers=headers))
        except PublishError as exc:
            self._too_large(exc, records[len(futures)][1])
            raise
        failed: tuple[BaseException, Message] | None = None
        for (_, message, _, _), future in zip(records, futures, strict=True):
            try:
                await future
            except Exception as exc:  # every record's outcome is awaited; the first fails
                failed = failed or (exc, message)
        if failed is not None:
            try:
                with self._table.converting(where, PublishError):
                    raise failed[0]
            except PublishError as exc:
                self._too_large(exc, failed[1])
                raise

    def _too_large(self, exc: PublishError, message: Message) -> None:
        if isinstance(exc.__cause__, MessageSizeTooLargeError):
            raise MessageTooLargeError(
                message.id, len(message.body), self._limit, self._url
            ) from exc.__cause__
