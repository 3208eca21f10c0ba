"""``amqp://`` / ``amqps://`` — RabbitMQ, the production broker.

``amqp://user:pass@host1:5672,host2:5673/vhost?namespace=ns&exchange=events``
with ``queue_type=classic|quorum``, ``heartbeat`` (s), ``prefetch`` (overrides the
consumer's message count), ``confirm_timeout`` (s), ``reconnect_timeout`` (s: how
long an operation waits for a lost connection to come back), ``connect_timeout``
(s), ``dlq_retention`` (s, 0 = for ever), ``management`` (the management API's
URL, for queue inspection), ``retain`` (a duration: a stream of the events exchange
keeps every event that long, for backfill) and, for amqps, ``cafile``, ``certfile``, ``keyfile``,
``verify``.

One durable topic exchange, routing key = event type; one durable queue per
subscription bound with its patterns; TTL queues for delayed retries; one
``<service>.dlq`` per service. See ``docs/amqp.md`` for the wire mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import Self, TypeVar, TypeVarTuple

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage

from ...broker import (
    Broker,
    Delivery,
    Features,
    Prefetch,
    ProgressCallback,
    Subscription,
    dead_letter_queue,
)
from ...capabilities import QueueStats
from ...deadletter import DeadLetter
from ...errors import DecodeError, HeaderError, HeraldError, MessageError, PublishError
from ...message import Message
from .connection import AMQPConnection, Opener
from .consumer import Declarer, Deliverer, Intake, consume
from .credit import Flow
from .deadletters import DeadLetterQueue
from .delivery import AMQPDelivery, Releases
from .errors import describe
from .history import History
from .inspection import Inspector
from .publisher import Outgoing, Publisher
from .replies import DirectReplyTransport, send_reply
from .settings import AMQPSettings
from .topology import DELAY_BUCKETS_MS, Topology, delay_bucket, is_reply_address
from .wire import (
    DELIVERY_COUNT,
    attempt_header,
    attempt_of,
    best_effort,
    delivery_count,
    properties_for,
    read,
)

__all__ = ["AMQPBroker"]

log = logging.getLogger("herald.amqp")

R = TypeVar("R")
Args = TypeVarTuple("Args")
MiB = 1024 * 1024


class AMQPBroker(Broker):
    """RabbitMQ through aiormq, with its own connection recovery.

    Implements :class:`herald.DeadLetterAdmin`, :class:`herald.QueueInspection`,
    :class:`herald.ReplyCapable` (RabbitMQ's direct reply-to),
    :class:`herald.capabilities.ConnectionStatus` and :class:`herald.RetainedHistory`
    (with ``retain=``: see :mod:`.history`).
    """

    schemes = ("amqp", "amqps")
    features = Features(
        persistent=True,
        multi_process=True,
        retry_headers=True,
        counts_redelivery=True,
        release_counts_attempt=False,
        max_message_bytes=16 * MiB,
        max_retry_delay=DELAY_BUCKETS_MS[-1] / 1000,
        retry_delay_steps=tuple(ms / 1000 for ms in DELAY_BUCKETS_MS),
    )

    def __init__(self, settings: AMQPSettings) -> None:
        self.settings = settings
        self.topology = Topology(settings)
        self.connection = AMQPConnection(settings, on_connected=self._on_connected)
        self.errors = self.connection.errors
        self.publisher = Publisher(self.connection)
        self.releases = Releases()
        self._dead = DeadLetterQueue(
            settings, self.connection, self.publisher, self._declare_dead_letters
        )
        self._inspector = Inspector(settings, self.connection)
        self._history = History(
            self.topology, self.connection, self.publisher, self._declare_durable
        )
        self._control: AbstractChannel | None = None
        self._control_lock = asyncio.Lock()
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(AMQPSettings.from_url(url))

    def __repr__(self) -> str:
        return f"AMQPBroker({str(self.settings)!r})"

    @property
    def connected(self) -> bool:
        """Whether the connection is up now (:class:`herald.capabilities.ConnectionStatus`)."""
        return self.connection.is_connected

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

    async def _publish(self, messages: Sequence[Message]) -> None:
        exchange = self.topology.exchange
        items = [Outgoing(exchange, m.type, m.body, properties_for(m)) for m in messages]
        try:
            await self.publisher.publish(items)
        except PublishError as exc:
            if not isinstance(exc.__cause__, aiormq.ChannelNotFoundEntity):
                raise
            log.warning("exchange %s was deleted; declaring the topology again", exchange)
            await self._declaring(self.topology.redeclare)
            await self.publisher.publish(items)

    async def declare(self, subscription: Subscription) -> None:
        if subscription.durable:
            await self._declare_durable(subscription)
        else:
            await self._declaring(self._declare_transient, subscription)

    def consume(
        self, subscription: Subscription, prefetch: Prefetch
    ) -> AsyncGenerator[Delivery, None]:
        return self._history.consume(subscription, prefetch, self._consume)

    def _consume(
        self, subscription: Subscription, prefetch: Prefetch, backfill: str | None
    ) -> AsyncGenerator[Delivery, None]:
        """The queue of ``subscription``, or its ``backfill`` queue: then deliveries
        name the queue itself (retries and dead letters go where its own do)."""
        if self.settings.prefetch:
            prefetch = Prefetch(self.settings.prefetch, prefetch.bytes)
        flow = Flow(prefetch, self.features.max_message_bytes)
        declare: Declarer = self._consumer_queue
        deliver: Deliverer = functools.partial(self._delivery, subscription)
        released: Callable[[str, DeliveredMessage], None] = self._released
        if backfill is not None:
            declare, deliver, released = self._backfill_side(subscription, backfill)
        return consume(
            self.connection,
            subscription,
            flow,
            declare,
            deliver,
            released,
            self._consumers,
            quorum=self.settings.queue_type == "quorum",
        )

    async def backfill(self, subscription: Subscription, since: datetime | None = None) -> int:
        """Declare the queue; if this call creates it, give it the history the events
        stream kept (``retain=``; see :mod:`.history`)."""
        return await self._history.backfill(subscription, since)

    async def destroy(self) -> None:
        await self._declaring(self.topology.destroy)

    # -- dead letters (DeadLetterAdmin) ---------------------------------------------

    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        return await self._dead.read(service, limit)

    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        return await self._dead.replay(service, ids, progress)

    async def replay_edited_dead_letter(self, service: str, id: str, message: Message) -> bool:
        return await self._dead.replay(service, {id}, None, message) == 1

    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        return await self._dead.purge(service, ids)

    # -- queue inspection (QueueInspection) -----------------------------------------

    async def inspect_queues(self, queues: Collection[str] | None = None) -> list[QueueStats]:
        return await self._inspector.inspect(queues)

    # -- direct reply-to (ReplyCapable) ---------------------------------------------

    def reply_transport(self) -> DirectReplyTransport:
        return DirectReplyTransport(
            self.connection,
            self.topology.exchange,
            self.features.max_message_bytes,
            functools.partial(self._declaring, self.topology.redeclare),
        )

    def is_reply_address(self, address: str) -> bool:
        return is_reply_address(address)

    async def send_reply(self, address: str, reply: Message) -> None:
        if not is_reply_address(address):
            raise HeaderError(f"{address[:100]!r} is not a direct reply-to address")
        channel = await self._control_channel()
        with self.errors.converting(f"sending the reply to {address}", PublishError):
            await send_reply(channel, address, reply)

    # -- what deliveries need (delivery.Settler) ------------------------------------

    async def requeue_later(
        self, queue: str, message: Message, attempt: int, delay: float, transient: bool
    ) -> None:
        """Put ``message`` back on ``queue`` (a server name) after ``delay`` s, or up
        to half as long again (the next retry bucket)."""
        item = Outgoing("", queue, message.body, properties_for(message, attempt))
        if transient and delay > 0:
            self._later(delay, item)
            return
        bucket = delay_bucket(delay)
        if bucket:
            if bucket < delay * 1000:
                log.warning(
                    "retry of %s in %s: %.0fs asked, %.0fs is the longest retry delay",
                    message.id,
                    queue,
                    delay,
                    bucket / 1000,
                )
            target = await self._declaring(self.topology.declare_retry_queue, queue, bucket)
            item = Outgoing("", target, item.body, item.properties)
        await self.publisher.publish([item])

    async def store_dead_letter(self, service: str, stored: Message) -> None:
        queue = await self._declare_dead_letters(service)
        await self.publisher.publish([Outgoing("", queue, stored.body, properties_for(stored))])

    # -- internals ------------------------------------------------------------------

    def _delivery(
        self, subscription: Subscription, intake: Intake, item: DeliveredMessage, queue: str
    ) -> AMQPDelivery:
        raw = item.header.properties.headers or {}
        redelivered = bool(getattr(item.delivery, "redelivered", False))
        error: MessageError | None = None
        attempt = 1
        excused = False
        try:
            message = read(item)
        except DecodeError as exc:
            message, error = best_effort(item), exc
        else:
            try:
                base = attempt_header(raw)
                counted = self.settings.queue_type == "quorum" and DELIVERY_COUNT in raw
                count = delivery_count(raw) if counted else None
            except HeaderError as exc:
                error = exc
            else:
                released = (
                    self.releases.excuse(queue, message.id, counted=counted) if redelivered else 0
                )
                attempt = attempt_of(base, redelivered=redelivered, count=count, released=released)
                excused = bool(released)
        return AMQPDelivery(
            message,
            subscription,
            attempt,
            error=error,
            intake=intake,
            tag=item.delivery_tag or 0,
            queue=queue,
            settler=self,
            note_release=self._notes_release(redelivered, excused),
        )

    def _backfill_side(
        self, subscription: Subscription, backfill: str
    ) -> tuple[Declarer, Deliverer, Callable[[str, DeliveredMessage], None]]:
        queue = self.settings.name(subscription.queue)

        async def declare(channel: AbstractChannel, sub: Subscription) -> str:
            await channel.queue_declare(backfill, passive=True)
            return backfill

        def deliver(intake: Intake, item: DeliveredMessage, _: str) -> Delivery:
            return self._delivery(subscription, intake, item, queue)

        def released(_: str, item: DeliveredMessage) -> None:
            self._released(queue, item)

        return declare, deliver, released

    def _notes_release(self, redelivered: bool, excused: bool) -> bool:
        """Whether the next delivery of a message given back is to be excused. A
        quorum queue counts each delivery, and each release is subtracted; on a
        classic queue the flag cannot count, so a release is excused unless the flag
        was already set by a crash and counted (it stays counted once)."""
        return self.settings.queue_type == "quorum" or not redelivered or excused

    def _released(self, queue: str, item: DeliveredMessage) -> None:
        """A message received but never handed out was given back (see
        :meth:`_notes_release`; its flag, if set, was not looked at)."""
        redelivered = bool(getattr(item.delivery, "redelivered", False))
        if not self._notes_release(redelivered, excused=False):
            return
        try:
            message_id = read(item).id
        except DecodeError:
            message_id = best_effort(item).id
        self.releases.note(queue, message_id)

    async def _consumers(self, queue: str) -> int | None:
        """The consumers of ``queue``, waiting ones too, as the queue counts them now;
        None when it cannot tell: a quorum queue counts only its active consumer over
        AMQP (the management API's numbers are seconds old)."""
        if self.settings.queue_type == "quorum":
            return None
        try:
            [found] = await self.connection.probe([queue])
        except HeraldError as exc:
            log.debug("counting the consumers of %s failed: %s", queue, exc)
            return None
        return None if found is None else found[1]

    async def _consumer_queue(self, channel: AbstractChannel, sub: Subscription) -> str:
        if sub.durable:
            return await self._declare_durable(sub)
        with self.errors.converting(f"declaring {sub.queue}"):
            return await self.topology.declare_transient(channel, sub)

    async def _declare_transient(self, channel: Opener, sub: Subscription) -> str:
        return await self.topology.declare_transient(await channel(), sub)

    async def _declare_durable(self, sub: Subscription) -> str:
        if self.settings.queue_type == "quorum":  # its queues dead-letter to <service>.dlq
            await self._declare_dead_letters(sub.service)
        return await self._declaring(self.topology.declare_subscription, sub)

    async def _declare_dead_letters(self, service: str) -> str:
        """On a connection aside: a queue declared earlier with other arguments makes
        the server close the channel (see :meth:`AMQPConnection.aside`)."""
        name = self.settings.name(dead_letter_queue(service))
        if name in self.topology.dead_letters:
            return name
        with self.errors.converting(f"declaring {name}"):
            async with self.connection.aside() as channel:
                return await self.topology.declare_dead_letter_queue(channel, service)

    async def _on_connected(self, conn: AbstractConnection) -> None:
        self._control = None
        channels: list[AbstractChannel] = []

        async def channel() -> AbstractChannel:
            if not channels or channels[-1].is_closed:
                channels.append(await conn.channel(publisher_confirms=False))
            return channels[-1]

        try:
            await self.topology.redeclare(channel)
        except aiormq.AMQPChannelError as exc:
            log.error("declaring the topology again failed: %s", describe(exc, self.settings))
        finally:
            for opened in channels:
                with contextlib.suppress(Exception):
                    await opened.close()

    async def _declaring(self, declare: Callable[[Opener, *Args], Awaitable[R]], *args: *Args) -> R:
        with self.errors.converting("declaring"):
            return await declare(self._control_channel, *args)

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
