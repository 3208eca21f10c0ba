"""The consume loop: one channel per consumer, manual acks, prefetch in messages and bytes.

RabbitMQ pushes, and ``basic.qos`` counts messages only (a ``prefetch_size`` makes
it close the connection: ``NOT_IMPLEMENTED``), so the bytes are bounded here, twice:

- **Handed out**: a delivery is yielded only while the :class:`herald.window.Window`
  has room (unsettled deliveries under ``Prefetch.messages`` and ``Prefetch.bytes``;
  always at least one).
- **Received**: the server may push ``credit`` messages to the consumer (its
  ``basic.qos`` count), where ``credit = max(1, min(messages, bytes // largest))``
  and ``largest`` is the largest of the last 32 bodies received (before the first,
  ``max_message_bytes``). When the sizes change the credit, the consumer cancels its
  ``basic.consume`` and subscribes again with the new credit (per-consumer QoS
  applies to new consumers only) once what it still holds leaves room for it:
  ``held + credit <= messages`` and ``held bytes + credit * largest <= bytes``, or
  nothing held. So while bodies are no larger than the recent largest, a consumer
  holds at most ``messages`` messages and ``bytes`` bytes (one body when a single
  one is larger); a sudden larger body overshoots until the messages sent with it
  are settled: at worst ``credit`` times the largest body the server accepts.

The loop survives what it can: a consumer cancelled by the broker (its queue was
deleted) declares the queue again and resubscribes; a closed channel or dropped
connection waits for the next one and subscribes on it. When no connection comes
back within ``reconnect_timeout`` it raises :class:`ConnectionLostError`, and the
worker calls ``consume()`` again. Closing the generator cancels the consumer, gives
back what was received but not handed out, and keeps the channel until every
delivery handed out is settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage

from ...broker import Delivery, Prefetch, Subscription
from ...errors import BrokerError, HeraldError
from ...window import Window
from .connection import AMQPConnection
from .errors import consumer_timed_out, describe

__all__ = ["ACK_DELAY", "CANCEL_TIMEOUT", "Declarer", "Deliverer", "Flow", "Intake", "consume"]

log = logging.getLogger("herald.amqp")

ACK_DELAY = 0.002
"""Seconds an ack may wait to be sent with others."""
SIZES_SEEN = 32
CANCEL_TIMEOUT = 10.0
"""Seconds to wait for a ``basic.cancel`` to be confirmed (a dead peer never does)."""
_CLOSED = object()
_CANCELLED = object()
_WAKE = object()

Declarer = Callable[[AbstractChannel, Subscription], Awaitable[str]]
Released = Callable[[DeliveredMessage], None]
Deliverer = Callable[["Intake", DeliveredMessage, str], Delivery]


class Flow:
    """One consumer's prefetch across its channels: the window of deliveries handed
    out, and the credit the server gets from the sizes of recent bodies.

    >>> flow = Flow(Prefetch(messages=64, bytes=4 * 2**20), largest=16 * 2**20)
    >>> flow.credit()
    1
    >>> flow.observe(2 * 2**20), flow.credit()
    (True, 2)
    """

    __slots__ = ("_default", "_sizes", "credited", "prefetch", "window")

    def __init__(self, prefetch: Prefetch, largest: int) -> None:
        self.prefetch = prefetch
        self.window = Window(prefetch)
        self._default = largest
        self._sizes: deque[int] = deque(maxlen=SIZES_SEEN)
        self.credited = self.credit()
        """The credit of the current subscription."""

    @property
    def largest(self) -> int:
        return max(self._sizes, default=self._default)

    def credit(self) -> int:
        """How many messages the server may push now (per-consumer ``basic.qos``)."""
        fit = self.prefetch.bytes // max(self.largest, 1)
        return max(1, min(self.prefetch.messages, fit))

    def observe(self, size: int) -> bool:
        """Count a body received; True when the credit should change (lower at once,
        higher once it at least doubles)."""
        self._sizes.append(size)
        wanted = self.credit()
        return wanted < self.credited or wanted >= 2 * self.credited

    def room_for(self, held: int, held_bytes: int) -> bool:
        """Whether a subscription with the current credit fits next to what is held."""
        credit = self.credit()
        return held == 0 or (
            held + credit <= self.prefetch.messages
            and held_bytes + credit * self.largest <= self.prefetch.bytes
        )


class Intake:
    """One consumer channel: what the server pushed to it and is not settled yet.

    Acks are collected and sent together, once a quarter of the prefetch window is
    acked or ``ACK_DELAY`` passed: the longest run of the oldest outstanding tags as
    one ``multiple`` ack, the rest one by one (every socket write wakes the broker).
    The channel is closed once the consumer stopped and nothing it received is
    unsettled.
    """

    __slots__ = (
        "_acks",
        "_batch",
        "_closing",
        "_flush",
        "_outstanding",
        "_released",
        "_woken",
        "channel",
        "closed_by",
        "flow",
        "held",
        "held_bytes",
        "inbox",
        "tag",
    )

    def __init__(self, channel: AbstractChannel, flow: Flow) -> None:
        self.channel = channel
        self.flow = flow
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.held = 0
        self.held_bytes = 0
        self.tag: str | None = None
        """The consumer tag while subscribed."""
        self.closed_by: BaseException | None = None
        self._released: Released | None = None
        self._woken = False
        self._outstanding: dict[int, None] = {}
        self._acks: set[int] = set()
        self._batch = max(1, flow.prefetch.messages // 4)
        self._flush: asyncio.Handle | None = None
        self._closing = False

    @property
    def stopped(self) -> bool:
        return self._released is not None

    @property
    def holding(self) -> tuple[int, int]:
        """(messages, bytes) received and not settled yet."""
        return self.held, self.held_bytes

    @property
    def closing(self) -> bool:
        """Whether the channel is being closed (no settlement can go through any more)."""
        return self._closing

    async def subscribe(self, queue: str, credit: int) -> None:
        await self.channel.basic_qos(prefetch_count=credit)
        ok = await self.channel.basic_consume(queue, self._received)
        self.tag = str(ok.consumer_tag)
        self._woken = False

    async def unsubscribe(self) -> None:
        """Cancel the consumer; what it was sent stays held until settled."""
        tag, self.tag = self.tag, None
        if tag is not None and not self.channel.is_closed:
            await self.channel.basic_cancel(tag, timeout=CANCEL_TIMEOUT)

    async def _received(self, item: DeliveredMessage) -> None:
        self.held += 1
        self.held_bytes += len(item.body)
        self._outstanding[item.delivery_tag or 0] = None
        if self._released is None:
            self.inbox.put_nowait(item)
        else:  # sent before the cancel took effect: give it back unseen
            await self._give_back([item], self._released)

    def ack(self, tag: int) -> None:
        self._acks.add(tag)
        if len(self._acks) >= self._batch:
            if self._flush is not None:
                self._flush.cancel()
            self._flush_soon()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(ACK_DELAY, self._flush_soon)

    async def nack(self, tag: int) -> None:
        """Requeue one delivery (it comes back with the ``redelivered`` flag)."""
        await self.channel.basic_nack(tag, requeue=True, wait=False)
        self._outstanding.pop(tag, None)

    def done(self, size: int, *, handed_out: bool = True) -> None:
        """A delivery was settled (or its settlement failed): free its room."""
        self.held -= 1
        self.held_bytes -= size
        if handed_out:
            self.flow.window.give(size)
        if self.stopped:
            if self.held <= 0:
                self.close_soon()
        elif self.tag is None and not self._woken and self.flow.room_for(*self.holding):
            self._woken = True
            self.inbox.put_nowait(_WAKE)

    def abandon(self) -> None:
        """Close the channel so that the broker delivers again what it holds (after a
        settlement that failed while the channel still looked usable)."""
        self.close_soon()

    async def stop(self, released: Released) -> None:
        """Cancel the consumer, give back what was received but not handed out (its
        redelivery is no attempt), and close the channel now or once the deliveries
        handed out are settled."""
        self._released = released
        with contextlib.suppress(Exception):
            await self.unsubscribe()
        unseen = []
        while not self.inbox.empty():
            item = self.inbox.get_nowait()
            if isinstance(item, DeliveredMessage):
                unseen.append(item)
        await self._give_back(unseen, released)
        if self.held <= 0:
            self.close_soon()

    async def _give_back(self, items: list[DeliveredMessage], released: Released) -> None:
        with contextlib.suppress(Exception):  # a closed channel gives them back anyway
            for item in items:
                await self.nack(item.delivery_tag or 0)
        for item in items:
            released(item)
            self.done(len(item.body), handed_out=False)

    def close_soon(self) -> None:
        if not self._closing and not self.channel.is_closed:
            self._closing = True
            _background(self._close())

    def _flush_soon(self) -> None:
        self._flush = None
        if self._acks:
            _background(self._send(self._take()))

    def _take(self) -> tuple[int | None, list[int]]:
        """(the tag to ack with ``multiple``, the tags to ack one by one)."""
        acks, self._acks = self._acks, set()
        top = None
        for tag in self._outstanding:
            if tag not in acks:
                break
            top = tag
        for tag in acks:
            self._outstanding.pop(tag, None)
        single = sorted(tag for tag in acks if top is None or tag > top)
        return top, single

    async def _send(self, acks: tuple[int | None, list[int]]) -> None:
        top, single = acks
        try:
            if top is not None:
                await self.channel.basic_ack(top, multiple=True, wait=False)
            for tag in single:
                await self.channel.basic_ack(tag, wait=False)
        except Exception as exc:  # closing the channel makes the broker redeliver them
            log.debug("acks not sent: %s; closing their channel", describe(exc))
            self.abandon()

    async def _close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._acks:
            await self._send(self._take())
        with contextlib.suppress(Exception):
            await self.channel.close()


async def consume(
    connection: AMQPConnection,
    subscription: Subscription,
    flow: Flow,
    declare: Declarer,
    deliver: Deliverer,
    released: Callable[[str, DeliveredMessage], None],
) -> AsyncGenerator[Delivery, None]:
    """Deliveries of ``subscription``; see the module docstring for the rules."""
    while True:
        channel = await connection.channel()
        intake = Intake(channel, flow)
        queue = subscription.queue
        closing = channel.closing
        closing.add_done_callback(functools.partial(_on_closed, intake=intake))
        channel.on_consumer_cancel_callbacks.add(functools.partial(_on_cancelled, intake=intake))
        try:
            declared = False
            while True:
                if intake.tag is None and flow.room_for(*intake.holding):
                    if not declared:
                        queue = await declare(channel, subscription)
                        declared = True
                    flow.credited = flow.credit()
                    await intake.subscribe(queue, flow.credited)
                await flow.window.room()
                item = await intake.inbox.get()
                if item is _WAKE:
                    continue
                if item is _CLOSED or channel.is_closed:
                    break
                if item is _CANCELLED:
                    log.warning("consumer of %s cancelled by the broker; subscribing again", queue)
                    intake.tag = None
                    declared = False
                    continue
                delivery = deliver(intake, item, queue)
                if flow.observe(delivery.size) and intake.tag is not None:
                    await intake.unsubscribe()
                flow.window.take(delivery.size)
                yield delivery
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if (task is not None and task.cancelling()) or not channel.is_closed:
                raise
        except HeraldError:
            raise
        except Exception as exc:
            if not channel.connection.is_closed and connection.is_connected:
                raise connection.errors.convert(
                    exc, f"consuming {subscription.queue}", BrokerError
                ) from exc
        finally:
            closing.cancel()
            await intake.stop(functools.partial(released, queue))
        if consumer_timed_out(intake.closed_by):
            log.warning(
                "RabbitMQ closed the channel of %s because a delivery stayed unsettled longer "
                "than its consumer_timeout (%s); that channel's deliveries are redelivered. "
                "Raise consumer_timeout in rabbitmq.conf for handlers this long",
                subscription.queue,
                intake.closed_by,
            )
        else:
            log.warning("channel of %s closed; subscribing again", subscription.queue)


def _on_cancelled(_frame: object, *, intake: Intake) -> None:
    intake.inbox.put_nowait(_CANCELLED)


def _on_closed(future: asyncio.Future[Any], *, intake: Intake) -> None:
    if not future.cancelled():
        intake.closed_by = future.exception()
        intake.inbox.put_nowait(_CLOSED)


_BACKGROUND: set[asyncio.Task[None]] = set()


def _background(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
