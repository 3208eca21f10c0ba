"""RabbitMQ's direct reply-to as Herald's request/reply transport (``ReplyCapable``).

The caller consumes the pseudo-queue ``amq.rabbitmq.reply-to`` (no-ack) on a channel
of its own and publishes its requests on that same channel, as RabbitMQ requires,
with the ``reply_to`` property set; the server then names the channel in the
property it delivers (``amq.rabbitmq.reply-to.<token>``), the serving adapter copies
it into ``herald-reply-to`` and answers through the default exchange. No queue is
declared. Requests are persistent and publisher-confirmed like every other publish.

A reply address comes from the wire, so ``is_reply_address`` (in ``topology``)
admits only the names RabbitMQ makes: the prefix, then its token (base64 of the
channel's process id and a key, ``.``-separated) of bounded length.

A request whose reply arrives before its publisher confirm is done: the reply proves
the responder got it, so the caller does not also wait for the confirm (for a
persistent request RabbitMQ confirms once the message is on disk or acked, which
can be later than the reply).

When the channel or the connection dies, calls in flight time out; the next call
opens a new channel (after the reconnect) and consumes again. Replies to requests
sent on the old channel are lost with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import aiormq
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec

from ...capabilities import CoreRequestTransport
from ...errors import ConnectionLostError, DecodeError, MessageTooLargeError, PublishError
from ...headers import CORRELATION_ID
from ...message import Message
from .batch import can_write_batch, write_batch, write_unconfirmed
from .topology import DIRECT_REPLY_TO
from .wire import properties_for, read

if TYPE_CHECKING:
    from .connection import AMQPConnection

__all__ = ["DirectReplyTransport", "send_reply"]

log = logging.getLogger("herald.amqp")


class DirectReplyTransport(CoreRequestTransport):
    """Requests and their replies on one confirm-mode channel, reopened when it closes."""

    def __init__(
        self,
        connection: AMQPConnection,
        exchange: str,
        max_bytes: int,
        redeclare: Callable[[], Awaitable[None]],
    ) -> None:
        self.address = DIRECT_REPLY_TO
        self._redeclare = redeclare
        self._connection = connection
        self._exchange = exchange
        self._max_bytes = max_bytes
        self._channel: AbstractChannel | None = None
        self._opening = asyncio.Lock()
        self._on_reply: Callable[[Message], None] | None = None
        self._closed = False
        self._answered: dict[str, asyncio.Future[None]] = {}
        """Requests being published, by correlation id: set when their reply came."""
        self.channels_opened = 0
        """How many channels were opened (1 plus one per reopen after a loss)."""

    async def start(self, on_reply: Callable[[Message], None]) -> None:
        self._on_reply = on_reply
        self._closed = False
        await self._open()

    async def send(self, request: Message) -> None:
        await self._send(request, durable=True)

    async def send_core(self, request: Message) -> None:
        """A transient request (``durable=False``): queued in memory, not written to
        disk, so the broker confirms it without a sync. It still waits in the queue
        for a responder (RabbitMQ has no "no responders" answer for a durable queue)."""
        await self._send(request, durable=False)

    async def _send(self, request: Message, durable: bool) -> None:
        if len(request.body) > self._max_bytes:
            raise MessageTooLargeError(request.id, len(request.body), self._max_bytes, "amqp://")
        properties = properties_for(request)
        properties.reply_to = DIRECT_REPLY_TO
        if not durable:
            properties.delivery_mode = 1
        redeclared = False
        while True:
            channel = await self._open()
            try:
                await self._publish(channel, request, properties)
                return
            except ConnectionLostError:
                log.info("reply channel lost while sending %s; sending again", request.id)
            except PublishError as exc:
                if redeclared or not isinstance(exc.__cause__, aiormq.ChannelNotFoundEntity):
                    raise
                log.warning("exchange %s was deleted; declaring the topology again", self._exchange)
                await self._redeclare()
                redeclared = True

    async def close(self) -> None:
        self._closed = True
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _open(self) -> AbstractChannel:
        channel = self._channel
        if channel is not None and not channel.is_closed:
            return channel
        async with self._opening:
            channel = self._channel
            if channel is not None and not channel.is_closed:
                return channel
            if self._closed:
                raise ConnectionLostError("the reply transport is closed")
            channel = await self._connection.channel(confirms=True)
            try:
                with self._connection.errors.converting(
                    f"consuming {DIRECT_REPLY_TO}", ConnectionLostError
                ):
                    await channel.basic_consume(DIRECT_REPLY_TO, self._received, no_ack=True)
            except BaseException:
                with contextlib.suppress(Exception):
                    await channel.close()
                raise
            if self._channel is not None:
                log.info("reply channel reopened; consuming %s again", DIRECT_REPLY_TO)
            self._channel = channel
            self.channels_opened += 1
            return channel

    async def _publish(
        self, channel: AbstractChannel, request: Message, properties: spec.Basic.Properties
    ) -> None:
        timeout = self._connection.settings.confirm_timeout
        correlation = request.headers.get(CORRELATION_ID)
        answered: asyncio.Future[None] | None = None
        if correlation and correlation not in self._answered:
            answered = asyncio.get_running_loop().create_future()
            self._answered[correlation] = answered
        publish: asyncio.Future[Any] | None = None
        try:
            if can_write_batch(channel):
                item = (self._exchange, request.type, request.body, properties)
                [publish] = await write_batch(channel, [item])
            else:
                publish = asyncio.ensure_future(
                    cast(aiormq.Channel, channel).basic_publish(
                        request.body,
                        exchange=self._exchange,
                        routing_key=request.type,
                        properties=properties,
                    )
                )
            async with asyncio.timeout(timeout):
                await asyncio.wait(
                    (publish,) if answered is None else (publish, answered),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            if answered is not None and answered.done():
                publish.add_done_callback(_retrieve)  # replied to: the confirm no longer matters
                return
            confirmation = await publish
        except asyncio.CancelledError:
            if publish is not None:
                publish.cancel()
            task = asyncio.current_task()
            if (task is not None and task.cancelling()) or not channel.is_closed:
                raise
            raise ConnectionLostError("the reply channel closed during a publish") from None
        except aiormq.DeliveryError as exc:
            raise PublishError(f"the broker refused request {request.id}: nack") from exc
        except TimeoutError as exc:
            if publish is not None:
                publish.cancel()
            raise PublishError(f"request {request.id} not confirmed within {timeout:g}s") from exc
        except Exception as exc:
            lost = channel.is_closed and not self._connection.is_connected
            kind = ConnectionLostError if lost else PublishError
            raise self._connection.errors.convert(
                exc, f"publishing request {request.id}", kind
            ) from exc
        finally:
            if answered is not None:
                self._answered.pop(str(correlation), None)
        if isinstance(confirmation, spec.Basic.Nack):
            raise PublishError(f"the broker refused request {request.id}: nack")

    async def _received(self, delivered: DeliveredMessage) -> None:
        try:
            reply = read(delivered)
        except DecodeError as exc:
            log.warning("dropped an undecodable reply: %s", exc)
            return
        if self._on_reply is not None:
            self._on_reply(reply)
        answered = self._answered.get(reply.headers.get(CORRELATION_ID, ""))
        if answered is not None and not answered.done():
            answered.set_result(None)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Nobody awaits a publish whose reply came first: read its outcome."""
    if not task.cancelled():
        task.exception()


async def send_reply(channel: AbstractChannel, address: str, reply: Message) -> None:
    """Publish ``reply`` to a direct reply-to ``address`` through the default exchange
    (RabbitMQ confirms nothing for these: the caller's channel may be gone)."""
    await write_unconfirmed(channel, ("", address, reply.body, properties_for(reply)))
