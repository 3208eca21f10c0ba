"""The consume loop: a channel per ``consume()``, manual acks, prefetch in messages and bytes.

RabbitMQ pushes, so the prefetch is bounded twice:

- **Handed out**: a delivery is yielded only while the :class:`herald.window.Window`
  has room (unsettled deliveries under ``Prefetch.messages`` and ``Prefetch.bytes``;
  always at least one).
- **Received**: the channel's consumers are promised (``basic.qos``) only what fits
  under both bounds, from the sizes of recent bodies (see :mod:`.credit`).

**Exclusive subscriptions** are RabbitMQ's single active consumer
(``x-single-active-consumer``): every consumer subscribes, the queue delivers to one
and keeps the others waiting; when the active one is cancelled or its channel
closes (its process died), the next one takes over, and what a closed channel held
goes back to the queue ahead of everything newer, in one step.

- **Stopping**: closing the generator stops handing out. When others wait (as the
  queue counts them) and deliveries handed out are still unsettled, the consumer
  stays subscribed (a cancel would hand the queue over at once, while those are
  still being handled): what arrives meanwhile, and what it releases, stays with the
  channel, and once everything handed out is settled the channel closes: the queue
  takes all back and activates the next consumer in one step, so the successor
  starts where this one stopped (what came back counts an attempt there: it was
  redelivered). Alone, or with nothing handed out, it stops as on a shared queue.
- **Credit**: a consumer cannot cancel its subscription to change its credit while
  it holds deliveries (the queue would pass to a waiting consumer). With nothing
  handed out it *moves*: it closes its channel (the server takes back what it was
  sent and activates the next consumer in one step, so no order is lost) and
  subscribes on a new one with the new credit, at the end of the queue's line
  (alone, it is active again at once; otherwise the consumer that waited takes its
  turn). It subscribes first with a credit of one until it has seen a body, and so
  moves once, at its first delivery, before handing it out (that message is
  delivered again, not counted as an attempt by this process). Holding deliveries,
  it changes its credit in place: it subscribes anew on the same channel (behind
  itself in the line), counts the queue's consumers, and cancels the old
  subscription only when the two are all there are (then :meth:`Intake.kick` makes
  the queue serve the new one); what the old one was sent arrives before anything
  the new one gets. With others waiting it cancels the new one and waits until it
  holds nothing to move (a body larger than those seen before may overshoot the byte
  bound until then).
- **Quorum queues** put what a closed channel held back behind what they took back
  before (a move would reorder what a dead holder left, and what is in flight when
  the channel closes cannot be known), and count only their active consumer over
  AMQP: there an exclusive consumer keeps the credit it subscribed with, for the
  largest bodies (unless it saw bodies before, after a reconnect).

Subscription changes run to their end even when the loop is cancelled meanwhile:
aiormq closes a channel whose command is cancelled, and with it every delivery
still being handled.

The loop survives what it can: a consumer cancelled by the broker (its queue was
deleted) declares the queue again and resubscribes; a closed channel or dropped
connection waits for the next one and subscribes on it. When no connection comes
back within ``reconnect_timeout`` it raises :class:`ConnectionLostError`, and the
worker calls ``consume()`` again. Closing the generator cancels the consumers, gives
back what was received but not handed out, and keeps the channel until every
delivery handed out is settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec

from ...broker import Delivery, Subscription
from ...errors import BrokerError, HeraldError
from .batch import write_acks
from .connection import AMQPConnection
from .credit import Flow, Ledger
from .errors import consumer_timed_out, describe

__all__ = ["ACK_DELAY", "CANCEL_TIMEOUT", "Counter", "Declarer", "Deliverer", "Intake", "consume"]

log = logging.getLogger("herald.amqp")

ACK_DELAY = 0.002
"""Seconds an ack may wait to be sent with others."""
CANCEL_TIMEOUT = 10.0
"""Seconds to wait for a ``basic.cancel`` to be confirmed (a dead peer never does)."""
_CLOSED = object()
_CANCELLED = object()
_WAKE = object()

Declarer = Callable[[AbstractChannel, Subscription], Awaitable[str]]
Counter = Callable[[str], Awaitable[int | None]]
"""The consumers of a queue (server name), waiting ones included; None if unknown."""
Released = Callable[[DeliveredMessage], None]
Deliverer = Callable[["Intake", DeliveredMessage, str], Delivery]


class Intake:
    """One consumer channel: its consumers, and what the server pushed to them and
    is not settled yet.

    Acks are collected and sent together, once a quarter of the prefetch window is
    acked or ``ACK_DELAY`` passed: the longest run of the oldest outstanding tags as
    one ``multiple`` ack, the rest one by one, all in one socket write (every write
    wakes the broker).
    The channel is closed once it stopped and nothing it received is unsettled.

    Settlements and the close go out one at a time, in the order they were made:
    aiormq's write queue is short, and a frame waiting for room in it can be
    overtaken by one written later. A ``multiple`` ack overtaking an earlier one
    made the server close the channel (``unknown delivery tag``), and an ack
    overtaken by the channel's close, the whole connection (``CHANNEL_ERROR -
    expected 'channel.open'``): with a hundred consumers on one connection it is
    often full.
    """

    __slots__ = (
        "_acks",
        "_batch",
        "_changing",
        "_closing",
        "_consumer_of",
        "_flush",
        "_keeping",
        "_leaving",
        "_outstanding",
        "_released",
        "_sending",
        "_woken",
        "channel",
        "closed_by",
        "exclusive",
        "flow",
        "handed",
        "inbox",
        "kept",
        "ledger",
        "quorum",
    )

    def __init__(
        self, channel: AbstractChannel, flow: Flow, *, exclusive: bool = False, quorum: bool = False
    ) -> None:
        self.channel = channel
        self.quorum = quorum
        """An exclusive consumer of a quorum queue keeps the credit it subscribed
        with (see the module docstring)."""
        self.flow = flow
        self.ledger = Ledger(flow)
        self.exclusive = exclusive
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.kept = False
        """An exclusive consumer found others waiting: it keeps its credit."""
        self.handed = 0
        """Deliveries handed out and not settled yet."""
        self.closed_by: BaseException | None = None
        self._released: Released | None = None
        self._woken = False
        self._outstanding: dict[int, None] = {}
        self._consumer_of: dict[int, str] = {}
        self._acks: set[int] = set()
        self._batch = max(1, flow.prefetch.messages // 4)
        self._flush: asyncio.Handle | None = None
        self._sending = asyncio.Lock()
        self._closing = False
        self._changing: asyncio.Task[None] | None = None
        self._keeping = False
        self._leaving = False

    @property
    def stopped(self) -> bool:
        return self._released is not None

    @property
    def subscribed(self) -> bool:
        return bool(self.ledger.credits)

    @property
    def held(self) -> int:
        return self.ledger.total[0]

    @property
    def keeps_releases(self) -> bool:
        """Whether a release is left to the channel's close (an exclusive queue being
        handed over: the close gives everything back in the queue's order)."""
        return self._keeping

    @property
    def closing(self) -> bool:
        """Whether the channel is being closed (no settlement can go through any more)."""
        return self._closing

    def wants_change(self) -> bool:
        """Whether the loop has a subscription to make or change now (in place)."""
        ledger = self.ledger
        if not self.exclusive:
            return ledger.wants_change()
        if not self.subscribed:
            return ledger.room() > 0
        return not self.quorum and self.handed > 0 and not self.kept and ledger.wants_switch()

    def wants_move(self) -> bool:
        """Whether an exclusive consumer with nothing handed out should subscribe
        again, with another credit, on a new channel."""
        if not self.exclusive or self.quorum or not self.subscribed:
            return False
        if self.handed > 0 or self.stopped:
            return False
        current, fresh = sum(self.ledger.credits.values()), self.flow.credit()
        return (
            self.ledger.room() < 0
            or fresh >= 2 * current
            or (fresh > current and self.ledger.exhausted())
        )

    async def change(self, queue: str, consumers: Counter, released: Released) -> None:
        """Make the subscription :meth:`wants_change` asked for."""
        ledger = self.ledger
        if self.exclusive and self.subscribed:
            change = self._switch(queue, ledger.replacing(), consumers, released)
        elif self.exclusive:  # before any body is seen, one, to move at once
            known = self.flow.informed or self.quorum
            change = self._subscribe(queue, ledger.room() if known else 1)
        elif ledger.over_promised():
            change = self._replace(queue, ledger.replacing())
        else:
            change = self._subscribe(queue, ledger.room())
        await self._uninterrupted(change)

    async def unsubscribe(self) -> None:
        """Cancel every consumer; what they were sent stays held until settled."""
        await self._uninterrupted(self._cancel_all())

    def handing_out(self, size: int) -> None:
        self.handed += 1
        self.flow.window.take(size)

    def woke(self) -> None:
        self._woken = False

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
        async with self._sending:
            await self.channel.basic_nack(tag, requeue=True, wait=False)
        self._outstanding.pop(tag, None)

    def done(self, tag: int, size: int, *, handed_out: bool = True) -> None:
        """Delivery ``tag`` was settled (or its settlement failed): free its room."""
        consumer = self._consumer_of.pop(tag, None)
        if consumer is not None:
            self.ledger.settled(consumer, size)
        if handed_out:
            self.handed -= 1
            self.flow.window.give(size)
        if self.stopped:
            if self._settled():
                self.close_soon()
        elif not self._woken and (self.wants_change() or self.wants_move()):
            self._woken = True
            self.inbox.put_nowait(_WAKE)

    def cancelled_by_broker(self, consumer: str | None) -> bool:
        """The broker cancelled a consumer of this channel (its queue was deleted)."""
        if consumer is None or consumer not in self.ledger.credits:
            return False
        self.ledger.forget(consumer)
        return True

    def abandon(self) -> None:
        """Close the channel so that the broker delivers again what it holds (after a
        settlement that failed while the channel still looked usable)."""
        self.close_soon()

    async def stop(self, released: Released, queue: str, consumers: Counter) -> None:
        """Stop handing out and close the channel now or once the deliveries handed
        out are settled. The consumers are cancelled and give back what they received
        but did not hand out (its redelivery is no attempt for this process), unless
        the queue is exclusive, others wait and deliveries are still being handled:
        then they stay until those are settled (see the module docstring). Stopping
        that is itself cancelled leaves everything to the channel's close, once what
        was handed out is settled."""
        keep = True
        try:
            if self._changing is not None:
                await asyncio.wait([self._changing])
            keep = self.exclusive and self.handed > 0 and await self._others_wait(queue, consumers)
        finally:
            self._released = released
            if keep:
                self._keep(released)
        if keep:
            return
        with contextlib.suppress(Exception):
            await self.unsubscribe()
        unseen = []
        while not self.inbox.empty():
            item = self.inbox.get_nowait()
            if isinstance(item, DeliveredMessage):
                unseen.append(item)
        await self._give_back(unseen, released)
        if self._settled():
            self.close_soon()

    def _keep(self, released: Released) -> None:
        """Keep what was received until the channel closes (once what was handed out
        is settled): the close gives it back in the queue's order."""
        self._keeping = True
        while not self.inbox.empty():
            item = self.inbox.get_nowait()
            if isinstance(item, DeliveredMessage):
                released(item)
        if self._settled():
            self.close_soon()

    async def _others_wait(self, queue: str, consumers: Counter) -> bool:
        try:
            counted = await consumers(queue)
        except Exception:
            return True
        return counted is None or counted > 1

    def _settled(self) -> bool:
        """Whether a stopped channel may close: nothing handed out is unsettled (nor,
        unless it hands an exclusive queue over, anything received)."""
        return self.handed <= 0 if self._keeping else self.held <= 0

    def leave(self, released: Released) -> None:
        """Close the channel at once, with nothing handed out: the server gives back
        what it was sent (noted as ``released``: its redelivery is no attempt)."""
        self._released = released
        self._leaving = True
        while not self.inbox.empty():
            item = self.inbox.get_nowait()
            if isinstance(item, DeliveredMessage):
                released(item)
        self.close_soon()

    async def kick(self, queue: str, released: Released) -> None:
        """Make ``queue`` deliver to the consumer it activated after one of this
        channel was cancelled: RabbitMQ 3.x classic queues activate the next consumer
        on a ``basic.cancel`` but deliver to it only on their next event (a requeue, a
        new consumer). A consumer subscribed and cancelled at once (behind the active
        one: it gets nothing, or gives it straight back) is that event."""
        if self.channel.is_closed:
            return

        async def bounce(item: DeliveredMessage) -> None:
            await self.channel.basic_nack(item.delivery_tag or 0, requeue=True, wait=False)
            released(item)

        with contextlib.suppress(Exception):
            await self.channel.basic_qos(prefetch_count=1)
            ok = await self.channel.basic_consume(queue, bounce)
            await self.channel.basic_cancel(str(ok.consumer_tag), timeout=CANCEL_TIMEOUT)

    def close_soon(self) -> None:
        if not self._closing and not self.channel.is_closed:
            self._closing = True
            _background(self._close())

    async def _uninterrupted(self, change: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(change)
        task.add_done_callback(_retrieve)
        self._changing = task
        await asyncio.shield(task)

    async def _subscribe(self, queue: str, credit: int) -> None:
        await self.channel.basic_qos(prefetch_count=credit)
        ok = await self.channel.basic_consume(queue, self._received)
        self.ledger.promise(str(ok.consumer_tag), credit)

    async def _switch(
        self, queue: str, credit: int, consumers: Counter, released: Released
    ) -> None:
        old = list(self.ledger.credits)
        await self.channel.basic_qos(prefetch_count=credit)
        ok = await self.channel.basic_consume(queue, self._received)
        new = str(ok.consumer_tag)
        if await consumers(queue) == 2:
            log.debug("%s: credit %d in place of %s", queue, credit, self.ledger.credits)
            self.ledger.promise(new, credit)
            for tag in old:
                self.ledger.forget(tag)
                await self.channel.basic_cancel(tag, timeout=CANCEL_TIMEOUT)
            await self.kick(queue, released)
        else:
            log.debug(
                "%s: others wait; keeping %s until nothing is held", queue, self.ledger.credits
            )
            self.kept = True
            await self.channel.basic_cancel(new, timeout=CANCEL_TIMEOUT)

    async def _replace(self, queue: str, credit: int) -> None:
        """Subscribe one consumer in place of all the live ones, before cancelling
        them: a transient (auto-delete) queue would go with its last consumer."""
        old = list(self.ledger.credits)
        await self._subscribe(queue, credit)
        for tag in old:
            self.ledger.forget(tag)
            await self.channel.basic_cancel(tag, timeout=CANCEL_TIMEOUT)

    async def _cancel_all(self) -> None:
        for tag in list(self.ledger.credits):
            self.ledger.forget(tag)
            if not self.channel.is_closed:
                await self.channel.basic_cancel(tag, timeout=CANCEL_TIMEOUT)

    async def _received(self, item: DeliveredMessage) -> None:
        consumer = str(getattr(item.delivery, "consumer_tag", ""))
        tag = item.delivery_tag or 0
        self.ledger.received(consumer, len(item.body))
        self._consumer_of[tag] = consumer
        self._outstanding[tag] = None
        if self._leaving and self._released is not None:
            self._released(item)  # the channel is closing: the server gives it back
            return
        if self._released is None:
            self.inbox.put_nowait(item)
        elif self._keeping:  # it goes back when the channel closes
            self._released(item)
        else:  # sent before the cancel took effect: give it back unseen
            await self._give_back([item], self._released)

    async def _give_back(self, items: list[DeliveredMessage], released: Released) -> None:
        with contextlib.suppress(Exception):  # a closed channel gives them back anyway
            for item in items:
                await self.nack(item.delivery_tag or 0)
        for item in items:
            released(item)
            self.done(item.delivery_tag or 0, len(item.body), handed_out=False)

    def _flush_soon(self) -> None:
        self._flush = None
        if self._acks:
            _background(self._send())

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

    async def _send(self) -> None:
        async with self._sending:
            await self._send_taken()

    async def _send_taken(self) -> None:
        if not self._acks:
            return
        top, single = self._take()
        try:
            await write_acks(self.channel, top, single)
        except Exception as exc:  # closing the channel makes the broker redeliver them
            log.debug("acks not sent: %s; closing their channel", describe(exc))
            self.abandon()

    async def _close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        async with self._sending:
            await self._send_taken()
            with contextlib.suppress(Exception):
                await self.channel.close()


async def consume(
    connection: AMQPConnection,
    subscription: Subscription,
    flow: Flow,
    declare: Declarer,
    deliver: Deliverer,
    released: Callable[[str, DeliveredMessage], None],
    consumers: Counter,
    *,
    quorum: bool = False,
) -> AsyncGenerator[Delivery, None]:
    """Deliveries of ``subscription``; see the module docstring for the rules."""
    exclusive = subscription.exclusive and subscription.durable
    while True:
        channel = await connection.channel()
        intake = Intake(channel, flow, exclusive=exclusive, quorum=quorum)
        queue = subscription.queue
        give_back = functools.partial(released, queue)
        closing = channel.closing
        closing.add_done_callback(functools.partial(_on_closed, intake=intake))
        channel.on_consumer_cancel_callbacks.add(functools.partial(_on_cancelled, intake=intake))
        declared = moving = False
        try:
            while True:
                if intake.wants_move():
                    moving = True
                    break
                if intake.wants_change():
                    if not declared:
                        queue = await declare(channel, subscription)
                        give_back = functools.partial(released, queue)
                        declared = True
                    await intake.change(queue, consumers, give_back)
                await flow.window.room()
                item = await intake.inbox.get()
                if item is _WAKE:
                    intake.woke()
                    continue
                if item is _CLOSED or channel.is_closed:
                    break
                if item is _CANCELLED:
                    log.warning("consumer of %s cancelled by the broker; subscribing again", queue)
                    declared = False
                    continue
                flow.observe(len(item.body))
                if intake.wants_move():  # it goes back unseen, with the channel
                    give_back(item)
                    moving = True
                    break
                delivery = deliver(intake, item, queue)
                intake.handing_out(delivery.size)
                if not exclusive and intake.ledger.over_promised():
                    await intake.change(queue, consumers, give_back)  # before more come
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
            if moving:
                intake.leave(give_back)
            else:
                await intake.stop(give_back, queue, consumers)
        if moving:
            log.debug(
                "%s: subscribing again on a new channel, with a credit of %d", queue, flow.credit()
            )
        elif consumer_timed_out(intake.closed_by):
            log.warning(
                "RabbitMQ closed the channel of %s because a delivery stayed unsettled longer "
                "than its consumer_timeout (%s); that channel's deliveries are redelivered. "
                "Raise consumer_timeout in rabbitmq.conf for handlers this long",
                subscription.queue,
                intake.closed_by,
            )
        else:
            log.warning("channel of %s closed; subscribing again", subscription.queue)


def _on_cancelled(frame: spec.Basic.Cancel, *, intake: Intake) -> None:
    if intake.cancelled_by_broker(frame.consumer_tag):
        intake.inbox.put_nowait(_CANCELLED)


def _on_closed(future: asyncio.Future[Any], *, intake: Intake) -> None:
    if not future.cancelled():
        intake.closed_by = future.exception()
        intake.inbox.put_nowait(_CLOSED)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Its caller may have been cancelled: nobody else reads its outcome."""
    if not task.cancelled():
        task.exception()


_BACKGROUND: set[asyncio.Task[None]] = set()


def _background(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
