"""``kafka://host:9092[,host2:9092]?namespace=NS&partitions=3&replication=1`` — Apache
Kafka, or any server speaking its protocol, through aiokafka.

A topic per family of event types (``herald.events.<first word>``, partitioned by
key); a queue ``<service>.<name>`` is the consumer group ``herald.group.<queue>``
subscribed to the topics its patterns name, passing over the types they do not
match, so fan-out is one group per service and the order per key holds across a
family's types because a key always maps to one partition of its family's topic.
Offsets are committed below the lowest unfinished delivery of each partition;
retries wait in per-delay retry topics of the queue; dead letters go, with their
reason, to ``herald.dlq.<service>``. See docs/kafka.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Self

from ...broker import Broker, Delivery, Features, Prefetch, ProgressCallback, Subscription
from ...capabilities import QueueStats
from ...deadletter import DeadLetter
from ...errors import BrokerError
from ...message import Message
from .connection import Clients, open_clients
from .consumer import QueueConsumer
from .deadletters import DeadLetterStore
from .errors import error_table
from .inspection import Inspector
from .publisher import Publisher
from .settings import KafkaSettings
from .topology import TIERS, Topology

__all__ = ["CLOSE_WAIT", "KafkaBroker"]

CLOSE_WAIT = 5.0
"""Seconds ``close()`` gives stopped consumers to commit and leave their groups."""


@dataclass(slots=True)
class _Connected:
    clients: Clients
    topology: Topology
    publisher: Publisher
    consumer: QueueConsumer
    dead: DeadLetterStore
    inspector: Inspector


class KafkaBroker(Broker):
    """Apache Kafka; implements :class:`herald.DeadLetterAdmin`,
    :class:`herald.QueueInspection`, :class:`herald.RetainedHistory` and
    :class:`herald.capabilities.ConsumerStatus` (a queue's consumer is consuming once
    its group assigned it partitions).

    >>> KafkaBroker.from_url("kafka://k1:9092,k2:9093?namespace=dev")
    KafkaBroker('kafka://k1:9092,k2:9093?namespace=dev')
    """

    schemes = ("kafka",)

    def __init__(self, settings: KafkaSettings | None = None) -> None:
        self.settings = settings or KafkaSettings()
        self.url = self.settings.shown_url
        self.features = Features(
            persistent=True,
            multi_process=True,
            retry_headers=True,
            counts_redelivery=False,
            release_counts_attempt=False,
            max_message_bytes=self.settings.max_message_bytes,
            # a retry tier holds each record until its own due time, in the order
            # written: hops of exactly one tier keep a tier's records in due order
            max_retry_delay=TIERS[-1] / 1000,
            retry_delay_steps=tuple(tier / 1000 for tier in TIERS if tier),
        )
        self._table = error_table()
        self._connected: _Connected | None = None

    def __repr__(self) -> str:
        return f"KafkaBroker({self.url!r})"

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(KafkaSettings.from_url(url))

    def _parts(self) -> _Connected:
        if self._connected is None:
            raise BrokerError(f"{self.url}: not connected")
        return self._connected

    async def connect(self) -> None:
        if self._connected is not None:
            return
        settings, table = self.settings, self._table
        with table.converting(f"connecting to {self.url}"):
            clients = await open_clients(settings)
        topology = Topology(clients.admin, settings, table)
        publisher = Publisher(
            clients.producer, topology, table, self.url, settings.max_message_bytes
        )
        consumer = QueueConsumer(settings, topology, publisher, table, clients.producer)
        self._connected = _Connected(
            clients,
            topology,
            publisher,
            consumer,
            DeadLetterStore(settings, topology, publisher, table),
            Inspector(settings, topology, clients.admin, consumer.presence, table),
        )

    async def close(self) -> None:
        parts, self._connected = self._connected, None
        if parts is None:
            return
        try:
            parts.consumer.closing.set()
            background = list(parts.consumer.background)
            if background:
                await asyncio.wait(background, timeout=CLOSE_WAIT)
            for task in background:
                task.cancel()
            await parts.consumer.presence.close()
        finally:
            await parts.clients.close()

    async def destroy(self) -> None:
        topology = self._parts().topology
        await topology.delete_topics(await topology.topics())
        with contextlib.suppress(BrokerError):  # not every server lists groups
            await topology.delete_groups(await topology.groups())

    async def _publish(self, messages: Sequence[Message]) -> None:
        await self._parts().publisher.publish(messages)

    async def declare(self, subscription: Subscription) -> None:
        await self._parts().consumer.declare(subscription)

    def consuming(self, queue: str) -> bool:
        parts = self._connected
        return parts is not None and parts.consumer.consuming(queue)

    async def consume(
        self, subscription: Subscription, prefetch: Prefetch
    ) -> AsyncGenerator[Delivery, None]:
        stream = self._parts().consumer.consume(subscription, prefetch)
        try:
            async for delivery in stream:
                yield delivery
        finally:
            await stream.aclose()

    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        return await self._parts().dead.letters(service, limit)

    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        return await self._parts().dead.replay(service, ids, progress)

    async def replay_edited_dead_letter(self, service: str, id: str, message: Message) -> bool:
        return await self._parts().dead.replay(service, {id}, None, message) == 1

    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        return await self._parts().dead.purge(service, ids)

    async def inspect_queues(self, queues: Collection[str] | None = None) -> list[QueueStats]:
        """Depth, in flight and consumers per queue (see :mod:`.inspection`)."""
        return await self._parts().inspector.inspect_queues(queues)

    async def backfill(self, subscription: Subscription, since: datetime | None = None) -> int:
        """Declare the queue; a group seen for the first time starts at the oldest
        retained record, or at ``since`` (see :mod:`.history`)."""
        return await self._parts().consumer.declare(subscription, since or True)
