"""``amqp://`` / ``amqps://`` — RabbitMQ, the production broker.

``amqp://user:pass@host1:5672,host2:5673/vhost?namespace=ns&exchange=events``
with ``queue_type=classic|quorum``, ``heartbeat`` (s), ``prefetch`` (overrides the
consumer's), ``confirm_timeout`` (s), ``reconnect_timeout`` (s: how long an
operation waits for a lost connection to come back), ``connect_timeout`` (s) and,
for amqps, ``cafile``, ``certfile``, ``keyfile``, ``verify``.

One durable topic exchange, routing key = event type; one durable queue per
subscription bound with its patterns; TTL queues for delayed retries; one
``<service>.dlq`` per service. See ``docs/amqp.md`` for the wire mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Sequence
from typing import TypeVar, TypeVarTuple

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage

from ..broker import Broker, Delivery, Features, ProgressCallback, Subscription
from ..deadletter import DeadLetter, DeadLetterReason
from ..errors import BrokerError, DecodeError, HeraldError, PublishError
from ..message import Message
from ..url import BrokerURL
from ..wire import CE_PREFIX
from .amqp_connection import AMQPConnection, describe_error
from .amqp_consumer import consume_queue
from .amqp_deadletters import DeadLetterQueue
from .amqp_publisher import Outgoing, Publisher
from .amqp_rpc import DirectReplyTransport, is_direct_reply_address
from .amqp_settings import AMQPSettings
from .amqp_topology import Topology, delay_bucket
from .amqp_wire import header_text, properties_for

__all__ = ["AMQPBroker"]

log = logging.getLogger("herald.amqp")

R = TypeVar("R")
Args = TypeVarTuple("Args")


class AMQPBroker(Broker):
    """RabbitMQ through aiormq, with its own connection recovery."""

    scheme = "amqp"
    features = Features(
        persistent=True,
        multi_process=True,
        restartable=True,
        retry_headers=True,
        counts_redelivery=True,
        max_message_bytes=16 * 1024 * 1024,
    )

    def __init__(self, settings: AMQPSettings) -> None:
        self.settings = settings
        self.topology = Topology(settings)
        self.connection = AMQPConnection(settings, on_connected=self._on_connected)
        self.publisher = Publisher(self.connection)
        self._dead = DeadLetterQueue(
            settings, self.connection, self.publisher, self.topology.declare_dead_letter_queue
        )
        self._control: AbstractChannel | None = None
        self._control_lock = asyncio.Lock()
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: BrokerURL) -> AMQPBroker:
        return cls(AMQPSettings.from_url(url))

    def __repr__(self) -> str:
        return f"AMQPBroker({str(self.settings)!r})"

    async def connect(self) -> None:
        await self.connection.connect()

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.publisher.close()
        control, self._control = self._control, None
        if control is not None and not control.is_closed:
            with contextlib.suppress(Exception):
                await control.close()
        await self.connection.close()

    async def publish(self, messages: Sequence[Message]) -> None:
        limit = self.features.max_message_bytes
        exchange = self.topology.exchange
        items = []
        for message in messages:
            if len(message.body) > limit:
                raise PublishError(
                    f"message {message.id} has {len(message.body)} bytes; the limit is {limit}"
                )
            items.append(Outgoing(exchange, message.type, message.body, properties_for(message)))
        if not items:
            return
        try:
            await self.publisher.publish(items)
        except PublishError as exc:
            if not isinstance(exc.__cause__, aiormq.ChannelNotFoundEntity):
                raise
            log.warning("exchange %s was deleted; declaring the topology again", exchange)
            await self._declaring(self.topology.redeclare)
            await self.publisher.publish(items)

    async def declare(self, subscription: Subscription) -> None:
        await self._declaring(self._declare_for_consumer, subscription)

    def consume(self, subscription: Subscription, prefetch: int) -> AsyncGenerator[Delivery, None]:
        return consume_queue(
            self.connection,
            self,
            subscription,
            self.settings.prefetch or prefetch,
            self._declare_for_consumer,
            self._dead_letter_undecodable,
        )

    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        return await self._dead.read(service, limit)

    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        return await self._dead.replay(service, ids, progress)

    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        return await self._dead.purge(service, ids)

    def reply_transport(self) -> DirectReplyTransport:
        return DirectReplyTransport(
            self.connection,
            self.topology.exchange,
            self.features.max_message_bytes,
            self._redeclare_topology,
        )

    async def send_reply(self, reply_to: str, reply: Message) -> None:
        if not is_direct_reply_address(reply_to):
            await super().send_reply(reply_to, reply)
            return
        channel = await self._control_channel()
        try:
            await channel.basic_publish(
                reply.body,
                exchange="",
                routing_key=reply_to,
                properties=properties_for(reply),
                mandatory=False,
            )
        except Exception as exc:
            reason = describe_error(exc, self.settings)
            raise PublishError(f"sending the reply to {reply_to} failed: {reason}") from exc

    async def destroy(self) -> None:
        await self._declaring(self.topology.destroy)

    async def requeue_later(
        self, queue: str, message: Message, attempt: int, delay: float, transient: bool
    ) -> None:
        """Put ``message`` back on ``queue`` (a server name) after about ``delay`` s."""
        item = Outgoing("", queue, message.body, properties_for(message, attempt))
        bucket = delay_bucket(delay)
        if transient and bucket:
            self._later(delay, item)
            return
        if bucket:
            target = await self._declaring(self.topology.declare_retry_queue, queue, bucket)
            item = Outgoing("", target, item.body, item.properties)
        await self.publisher.publish([item])

    async def store_dead_letter(self, service: str, stored: Message) -> None:
        queue = await self._declaring(self.topology.declare_dead_letter_queue, service)
        await self.publisher.publish([Outgoing("", queue, stored.body, properties_for(stored))])

    async def _on_connected(self, conn: AbstractConnection) -> None:
        self._control = None
        channel = await conn.channel(publisher_confirms=False)
        try:
            await self.topology.redeclare(channel)
        except aiormq.AMQPChannelError as exc:
            log.error("declaring the topology again failed: %s", describe_error(exc, self.settings))
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _declare_for_consumer(self, channel: AbstractChannel, sub: Subscription) -> str:
        if sub.durable:
            return await self.topology.declare_subscription(channel, sub)
        return await self.topology.declare_transient(channel, sub)

    async def _redeclare_topology(self) -> None:
        await self._declaring(self.topology.redeclare)

    async def _declaring(
        self, declare: Callable[[AbstractChannel, *Args], Awaitable[R]], *args: *Args
    ) -> R:
        channel = await self._control_channel()
        try:
            return await declare(channel, *args)
        except HeraldError:
            raise
        except Exception as exc:
            raise BrokerError(f"declaring failed: {describe_error(exc, self.settings)}") from exc

    async def _control_channel(self) -> AbstractChannel:
        async with self._control_lock:
            channel = self._control
            if channel is None or channel.is_closed:
                channel = self._control = await self.connection.channel()
            return channel

    def _later(self, delay: float, item: Outgoing) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(timer)
            task = loop.create_task(self._publish_quietly(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        timer = loop.call_later(delay, fire)
        self._timers.add(timer)

    async def _publish_quietly(self, item: Outgoing) -> None:
        try:
            await self.publisher.publish([item])
        except HeraldError as exc:
            log.warning("retry of %s lost: %s", item.properties.message_id, exc)

    async def _dead_letter_undecodable(
        self, sub: Subscription, item: DeliveredMessage, error: DecodeError
    ) -> None:
        raw = item.header.properties.headers or {}
        headers = {
            str(name): header_text(value)
            for name, value in raw.items()
            if not str(name).startswith((CE_PREFIX, "cloudEvents:", "ce-", "ce_"))
        }
        message = Message(type=item.routing_key or "undecodable", body=item.body, headers=headers)
        reason = DeadLetterReason(sub.queue, "DecodeError", str(error), 1)
        log.error("dead-lettered an undecodable message from %s: %s", sub.queue, error)
        await self.store_dead_letter(sub.service, DeadLetter(message, reason).to_stored())
