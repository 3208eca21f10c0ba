"""``sqs://REGION?endpoint=...&namespace=NS&fifo=false`` — Amazon SQS with SNS fan-out.

One SNS topic per namespace takes every publish (``PublishBatch``, ten a call); each
Herald queue is an SQS queue subscribed to it with raw message delivery and a filter
policy made from its patterns; deliveries are long-polled receives kept invisible
while held; retries wait out their delay in the visibility timeout; dead letters are
moved by Herald, with their reason, to ``<service>.dlq``. ``fifo=true`` makes the
topic and queues FIFO, with ``MessageGroupId`` = key: the order per key then holds
in SQS itself, across consumers and redeliveries. See :mod:`.settings` for the
options and docs/sqs.md for the design and what standard queues cannot promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncGenerator, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Self

from ...broker import (
    SCHEDULER_SUBSCRIPTION,
    Broker,
    Delivery,
    Features,
    Prefetch,
    ProgressCallback,
    Subscription,
)
from ...capabilities import QueueStats
from ...deadletter import DeadLetter
from ...errors import BrokerError, PublishError
from ...message import Message
from ...schedule import due_of, wrap
from .connection import Clients, open_clients
from .consumer import QueueConsumer
from .deadletters import DeadLetterStore
from .delivery import Settler
from .errors import error_table, queue_gone
from .exclusive import Lock
from .inspection import Inspector
from .keeper import Keeper
from .publisher import Publisher
from .settings import MAX_VISIBILITY, SQSSettings
from .topology import KIND, OURS, QueueInfo, Topology
from .wire import MAX_SIZE

__all__ = ["ATTRIBUTE_ROOM", "CLOSE_WAIT", "MAX_DELAY", "SQSBroker"]

MAX_DELAY = 900
"""The longest ``DelaySeconds`` SQS takes: 15 minutes."""
CLOSE_WAIT = 2.0
"""Seconds ``close()`` lets stopped consumers' receives still in flight end (and give
back what they bring) before cutting them off: a receive cut off may have taken
messages, which come back after the visibility timeout, one receive counted."""
ATTRIBUTE_ROOM = 4096
"""Bytes of the 256 KiB kept for message attributes (CloudEvents attributes and
headers): a body up to ``max_message_bytes`` is accepted while its attributes fit."""


@dataclass(slots=True)
class _Connected:
    clients: Clients
    topology: Topology
    publisher: Publisher
    settler: Settler
    keeper: Keeper
    consumer: QueueConsumer
    dead: DeadLetterStore
    inspector: Inspector


class SQSBroker(Broker):
    """Amazon SQS and SNS; implements :class:`herald.DeadLetterAdmin` and
    :class:`herald.QueueInspection`."""

    schemes = ("sqs",)
    features = Features(
        persistent=True,
        multi_process=True,
        retry_headers=False,
        counts_redelivery=True,
        release_counts_attempt=True,
        max_message_bytes=MAX_SIZE - ATTRIBUTE_ROOM,
        max_retry_delay=MAX_VISIBILITY - 60,
    )

    def __init__(self, settings: SQSSettings | None = None) -> None:
        self.settings = settings or SQSSettings()
        self.url = self.settings.shown_url
        # a scheduled message waits in the scheduler queue, which keeps it
        # ``retention`` seconds from when it was sent, however often it is retried
        self.features = replace(
            type(self).features, max_schedule_delay=float(self.settings.retention)
        )
        self._table = error_table(self.settings)
        self._connected: _Connected | None = None

    def __repr__(self) -> str:
        return f"SQSBroker({self.url!r})"

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(SQSSettings.from_url(url))

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
        try:
            topology = Topology(clients, settings, table)
            await topology.topic()
        except BaseException:
            await clients.close()
            raise
        settler = Settler(clients.sqs, topology, table)
        keeper = Keeper(clients.sqs, settings, settler, table)
        lock = Lock(clients.sqs, topology, settings, table)
        self._connected = _Connected(
            clients,
            topology,
            Publisher(clients.sns, topology, table),
            settler,
            keeper,
            QueueConsumer(
                clients.sqs, topology, settings, table, settler, keeper, lock, self._info
            ),
            DeadLetterStore(clients.sqs, topology, settings, table, settler),
            Inspector(clients.sqs, clients.cloudwatch, topology, table),
        )

    async def close(self) -> None:
        parts, self._connected = self._connected, None
        if parts is None:
            return
        try:
            # Stopped consumers' last receives, and the give-backs the last of them
            # starts when it ends (new tasks: the set is read again), then what those
            # queued on the batched settler.
            deadline = asyncio.get_running_loop().time() + CLOSE_WAIT
            while parts.consumer.background:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                await asyncio.wait(list(parts.consumer.background), timeout=left)
            for task in list(parts.consumer.background):
                task.cancel()
            with contextlib.suppress(Exception):
                await parts.settler.drain()
            await parts.keeper.close()
        finally:
            await parts.clients.close()

    async def destroy(self) -> None:
        parts = self._parts()
        clients, topology = parts.clients, parts.topology
        with self._table.converting("deleting the namespace"):
            topic = await topology.topic()
            paginator = clients.sns.get_paginator("list_subscriptions_by_topic")
            async for page in paginator.paginate(TopicArn=topic):
                for subscription in page.get("Subscriptions") or ():
                    await clients.sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
            await clients.sns.delete_topic(TopicArn=topic)
            urls: list[str] = []
            async for page in clients.sqs.get_paginator("list_queues").paginate(
                QueueNamePrefix=topology.names.prefix, MaxResults=1000
            ):
                urls += [
                    u for u in page.get("QueueUrls") or () if OURS.fullmatch(u.rsplit("/")[-1])
                ]
            await asyncio.gather(*(self._delete_ours(url) for url in urls))
        topology.forget("")

    async def _delete_ours(self, url: str) -> None:
        parts = self._parts()
        try:
            if KIND in await parts.topology.tags(url):
                await parts.clients.sqs.delete_queue(QueueUrl=url)
        except Exception as exc:
            if not queue_gone(exc):
                raise

    # -- publishing and queues ---------------------------------------------------------

    async def _publish(self, messages: Sequence[Message]) -> None:
        parts = self._parts()
        try:
            await parts.publisher.publish(messages)
        except BrokerError as exc:
            if not queue_gone(exc.__cause__):
                raise
            parts.topology.forget("")  # the topic is gone (an emulator restarted): again
            await parts.publisher.publish(messages)

    async def _publish_later(self, messages: Sequence[Message]) -> None:
        """Herald's scheduler queue, as on brokers without a delay of their own, but
        on standard queues the envelope is sent straight to it with ``DelaySeconds``
        (up to 15 minutes): the scheduler receives it once due, or once the longest
        delay SQS has passed. FIFO queues take no per-message delay: there the
        envelope goes through the topic like any publish."""
        if self.settings.fifo:
            await super()._publish_later(messages)
            return
        parts = self._parts()
        url = (await self._info(SCHEDULER_SUBSCRIPTION)).url
        now = time.time()
        sends = []
        for message in messages:
            delay = min(MAX_DELAY, math.ceil((due_of(message) or now) - now))
            envelope = wrap(message)
            sends.append(parts.settler.send(url, envelope, fifo=False, dedup="", delay=delay))
        with self._table.converting("scheduling", as_=PublishError):
            await asyncio.gather(*sends)

    async def declare(self, subscription: Subscription) -> None:
        await self._info(subscription)

    async def _info(self, subscription: Subscription) -> QueueInfo:
        parts = self._parts()
        info = await parts.topology.declare(subscription)
        if subscription.durable:
            await parts.topology.dead_letter_queue(subscription.service)
        return info

    async def consume(
        self, subscription: Subscription, prefetch: Prefetch
    ) -> AsyncGenerator[Delivery, None]:
        stream = self._parts().consumer.consume(subscription, prefetch)
        try:
            async for delivery in stream:
                yield delivery
        finally:
            await stream.aclose()

    # -- dead-letter admin -------------------------------------------------------------

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

    # -- queue inspection --------------------------------------------------------------

    async def inspect_queues(self, queues: Collection[str] | None = None) -> list[QueueStats]:
        return await self._parts().inspector.inspect(queues)
