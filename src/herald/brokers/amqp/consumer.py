"""The consume loop: one channel per consumer, prefetch as its QoS, manual acks.

The loop survives what it can: a consumer cancelled by the broker (its queue was
deleted) declares the queue again and resubscribes; a dropped connection waits for
the next one and subscribes on it. When no connection comes back within
``reconnect_timeout`` it raises :class:`ConnectionLostError`, and the worker calls
``consume()`` again. Closing the generator cancels the consumer but keeps the
channel until every delivery handed out is settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage

from ..broker import Delivery, Subscription
from ..errors import BrokerError, DecodeError, HeraldError
from ..message import Message
from .amqp_connection import AMQPConnection, describe_error
from .amqp_delivery import AMQPDelivery, ConsumerChannel, Settler
from .amqp_wire import decode_delivered, note_release

__all__ = ["consume_queue"]

log = logging.getLogger("herald.amqp")

_CLOSED = object()
_CANCELLED = object()

Declarer = Callable[[AbstractChannel, Subscription], Awaitable[str]]
UndecodableHandler = Callable[[Subscription, DeliveredMessage, DecodeError], Awaitable[None]]


async def consume_queue(
    connection: AMQPConnection,
    settler: Settler,
    subscription: Subscription,
    prefetch: int,
    declare: Declarer,
    undecodable: UndecodableHandler,
) -> AsyncGenerator[Delivery, None]:
    """Deliveries of ``subscription``; see the module docstring for the recovery rules."""
    while True:
        channel = await connection.channel()
        owner = ConsumerChannel(channel, prefetch)
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        tag: str | None = None
        queue = subscription.queue
        closing = channel.closing
        closing.add_done_callback(functools.partial(_on_closed, inbox=inbox))
        channel.on_consumer_cancel_callbacks.add(functools.partial(_on_cancelled, inbox=inbox))
        try:
            await channel.basic_qos(prefetch_count=prefetch)
            while True:
                queue = await declare(channel, subscription)
                ok = await channel.basic_consume(
                    queue, functools.partial(_on_message, owner, inbox)
                )
                tag = str(ok.consumer_tag)
                item = await inbox.get()
                while item is not _CLOSED and item is not _CANCELLED:
                    if channel.is_closed:  # the rest were received on a dead channel
                        item = _CLOSED
                        break
                    try:
                        message, attempt = decode_delivered(item, queue)
                    except DecodeError as exc:
                        await undecodable(subscription, item, exc)
                        owner.ack(item.delivery_tag or 0)
                    else:
                        owner.unsettled += 1
                        yield _delivery(message, subscription, attempt, owner, item, queue, settler)
                    item = await inbox.get()
                if item is _CLOSED:
                    break
                log.warning("consumer of %s cancelled by the broker; subscribing again", queue)
                tag = None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if (task is not None and task.cancelling()) or not channel.is_closed:
                raise
        except HeraldError:
            raise
        except Exception as exc:
            if not channel.connection.is_closed and connection.is_connected:
                raise BrokerError(
                    f"consuming {subscription.queue} failed: "
                    f"{describe_error(exc, connection.settings)}"
                ) from exc
        finally:
            closing.cancel()
            await _stop(owner, tag, inbox, queue)
        log.warning("channel of %s closed; subscribing again", subscription.queue)


def _delivery(
    message: Message,
    subscription: Subscription,
    attempt: int,
    owner: ConsumerChannel,
    item: DeliveredMessage,
    queue: str,
    settler: Settler,
) -> AMQPDelivery:
    return AMQPDelivery(
        message,
        subscription,
        attempt,
        owner=owner,
        tag=item.delivery_tag or 0,
        queue=queue,
        settler=settler,
    )


async def _on_message(
    owner: ConsumerChannel, inbox: asyncio.Queue[Any], message: DeliveredMessage
) -> None:
    owner.received(message.delivery_tag or 0)
    inbox.put_nowait(message)


def _on_cancelled(_frame: object, *, inbox: asyncio.Queue[Any]) -> None:
    inbox.put_nowait(_CANCELLED)


def _on_closed(future: asyncio.Future[Any], *, inbox: asyncio.Queue[Any]) -> None:
    if not future.cancelled():
        future.exception()
        inbox.put_nowait(_CLOSED)


async def _stop(
    owner: ConsumerChannel, tag: str | None, inbox: asyncio.Queue[Any], queue: str
) -> None:
    """Cancel the consumer, give back what was received but not handed out (its
    redelivery is no attempt), and close the channel now or once the deliveries
    handed out are settled."""
    owner.stopped = True
    channel = owner.channel
    if tag is not None and not channel.is_closed:
        with contextlib.suppress(Exception):
            await channel.basic_cancel(tag)
    unseen = [(item, item.delivery_tag) for item in _drain(inbox) if item.delivery_tag]
    for item, _ in unseen:
        message_id = item.header.properties.message_id
        if message_id:
            note_release(queue, message_id)
    if channel.is_closed:
        return
    with contextlib.suppress(Exception):
        for _, delivery_tag in unseen:
            await channel.basic_nack(delivery_tag, requeue=True, wait=False)
            owner.forget(delivery_tag)
    if owner.unsettled <= 0:
        owner.close_soon()


def _drain(inbox: asyncio.Queue[Any]) -> list[DeliveredMessage]:
    items = []
    while not inbox.empty():
        item = inbox.get_nowait()
        if isinstance(item, DeliveredMessage):
            items.append(item)
    return items
