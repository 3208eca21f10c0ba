"""Deliveries from an AMQP consumer channel and how they are settled.

Acks go on the channel the message came on; if that channel died meanwhile the
settle raises :class:`ConnectionLostError` (the broker redelivers the message).
``retry`` first stores a copy (with publisher confirm) in the queue's TTL queue,
``dead_letter`` a copy in the service's dead-letter queue; only then is the
original acked, so a crash in between duplicates rather than loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from aiormq.abc import AbstractChannel

from ..broker import Delivery, Subscription
from ..deadletter import DeadLetter, DeadLetterReason
from ..errors import ConnectionLostError
from ..message import Message
from .amqp_connection import describe_error
from .amqp_wire import forget_release, note_release

if TYPE_CHECKING:
    from .amqp_settings import AMQPSettings

__all__ = ["AMQPDelivery", "ConsumerChannel", "Settler"]

log = logging.getLogger("herald.amqp")

ACK_DELAY = 0.002
"""Seconds an ack may wait to be sent with others."""


class Settler(Protocol):
    """What deliveries need from the broker to retry and dead-letter."""

    settings: AMQPSettings

    async def requeue_later(
        self, queue: str, message: Message, attempt: int, delay: float, transient: bool
    ) -> None: ...

    async def store_dead_letter(self, service: str, stored: Message) -> None: ...


class ConsumerChannel:
    """A consumer's channel and its unacked delivery tags.

    Acks are collected and sent together, once a quarter of the prefetch window is
    acked or ``ACK_DELAY`` passed: the longest run of the oldest outstanding tags as
    one ``multiple`` ack, the rest one by one (every socket write wakes the broker).
    The channel is closed once the consumer stopped and nothing it handed out is
    unsettled.
    """

    __slots__ = (
        "_acks",
        "_batch",
        "_flush",
        "_outstanding",
        "channel",
        "stopped",
        "unsettled",
    )

    def __init__(self, channel: AbstractChannel, prefetch: int) -> None:
        self.channel = channel
        self.unsettled = 0
        self.stopped = False
        self._outstanding: dict[int, None] = {}
        self._acks: set[int] = set()
        self._batch = max(1, prefetch // 4)
        self._flush: asyncio.Handle | None = None

    def received(self, tag: int) -> None:
        self._outstanding[tag] = None

    def ack(self, tag: int) -> None:
        self._acks.add(tag)
        if len(self._acks) >= self._batch:
            if self._flush is not None:
                self._flush.cancel()
            self._flush_soon()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(ACK_DELAY, self._flush_soon)

    def forget(self, tag: int) -> None:
        self._outstanding.pop(tag, None)

    def settled(self) -> None:
        self.unsettled -= 1
        if self.stopped and self.unsettled <= 0:
            self.close_soon()

    def close_soon(self) -> None:
        if not self.channel.is_closed:
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
        except Exception as exc:  # the broker redelivers what was not acked
            log.debug("acks lost with their channel: %s", describe_error(exc))

    async def _close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._acks:
            await self._send(self._take())
        with contextlib.suppress(Exception):
            await self.channel.close()


_BACKGROUND: set[asyncio.Task[None]] = set()


def _background(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


class AMQPDelivery(Delivery):
    __slots__ = ("_owner", "_queue", "_settled", "_settler", "_tag")

    def __init__(
        self,
        message: Message,
        subscription: Subscription,
        attempt: int,
        *,
        owner: ConsumerChannel,
        tag: int,
        queue: str,
        settler: Settler,
    ) -> None:
        super().__init__(message, subscription, attempt)
        self._owner = owner
        self._tag = tag
        self._queue = queue
        self._settler = settler
        self._settled = False

    async def ack(self) -> None:
        if not self._settled:
            await self._ack()

    async def release(self) -> None:
        if not self._settled:
            await self._requeue(excused=True)

    async def retry(self, delay: float, headers: Mapping[str, str]) -> None:
        if self._settled:
            return
        self._usable_channel()
        message = self.message.with_headers(headers)
        try:
            await self._settler.requeue_later(
                self._queue,
                message,
                self.attempt + 1,
                delay,
                not self.subscription.durable,
            )
        except BaseException:
            await self._give_back()
            raise
        await self._ack()

    async def dead_letter(self, reason: DeadLetterReason) -> None:
        if self._settled:
            return
        self._usable_channel()
        stored = DeadLetter(self.message, reason).to_stored()
        try:
            await self._settler.store_dead_letter(self.subscription.service, stored)
        except BaseException:
            await self._give_back()
            raise
        await self._ack()

    async def _ack(self) -> None:
        self._usable_channel()
        self._owner.ack(self._tag)
        self._done()

    async def _requeue(self, *, excused: bool) -> None:
        channel = self._usable_channel()
        try:
            await channel.basic_nack(self._tag, requeue=True, wait=False)
        except Exception as exc:
            raise self._lost(exc) from exc
        self._owner.forget(self._tag)
        if excused:
            note_release(self._queue, self.message.id)
        self._settled = True
        self._owner.settled()

    async def _give_back(self) -> None:
        """After a failed retry or dead-lettering: redeliver, counting an attempt (a
        failure that keeps failing must not loop at the same attempt forever)."""
        with contextlib.suppress(Exception):
            await self._requeue(excused=False)

    def _usable_channel(self) -> AbstractChannel:
        channel = self._owner.channel
        if channel.is_closed:
            raise self._lost(None)
        return channel

    def _done(self) -> None:
        forget_release(self._queue, self.message.id)
        self._settled = True
        self._owner.settled()

    def _lost(self, exc: BaseException | None) -> ConnectionLostError:
        reason = describe_error(exc, self._settler.settings) if exc else "channel closed"
        return ConnectionLostError(
            f"cannot settle {self.message.id} from {self._queue} ({reason}); "
            "the broker will deliver it again"
        )
