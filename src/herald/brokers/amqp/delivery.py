"""Deliveries from an AMQP consumer channel and how each settlement is done.

Acks go on the channel the message came on; if that channel died meanwhile the
settlement raises :class:`ConnectionLostError` (the broker redelivers the message).
``retry`` first stores a copy (with publisher confirm) in the queue's TTL queue,
``dead_letter`` a copy in the service's dead-letter queue; only then is the original
acked, so a crash in between duplicates rather than loses it. If storing the copy
fails, the original is requeued (counting an attempt, so that a failure that keeps
failing cannot loop at the same attempt).

Whatever happens, a settlement frees the delivery's room in the prefetch window. A
settlement that fails on a channel that still looks usable closes that channel, so
that the broker delivers again everything it held: nothing stays leased to a live
consumer.

A ``release`` is a ``basic.nack`` with requeue: RabbitMQ sets the same
``redelivered`` flag as after a crash, so the releasing broker remembers the message
(:class:`Releases`) and does not count its next delivery as an attempt (on a classic
queue the flag is one bit: a delivery that already counted it for a crash is not
remembered, so its next delivery counts that crash again, once, rather than not). A
consumer that hands an exclusive queue over keeps what is released until its channel
closes, which gives it back in the queue's order (a quorum queue of RabbitMQ 3.x puts
a ``basic.nack`` at its back).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from ...broker import Delivery, Subscription
from ...deadletter import DeadLetter, DeadLetterReason
from ...errors import ConnectionLostError, MessageError
from ...message import Message
from .errors import describe

if TYPE_CHECKING:
    from .consumer import Intake
    from .settings import AMQPSettings

__all__ = ["AMQPDelivery", "Releases", "Settler"]


class Settler(Protocol):
    """What deliveries need from the broker to retry and dead-letter."""

    settings: AMQPSettings
    releases: Releases

    async def requeue_later(
        self, queue: str, message: Message, attempt: int, delay: float, transient: bool
    ) -> None: ...

    async def store_dead_letter(self, service: str, stored: Message) -> None: ...


class Releases:
    """Messages this broker gave back unhandled, per queue: their next delivery is no
    attempt. Bounded; the oldest are forgotten first.

    >>> r = Releases()
    >>> r.note("q", "m1"); r.excuse("q", "m1", counted=False), r.excuse("q", "m1", counted=False)
    (1, 0)
    """

    __slots__ = ("_counts", "_limit")

    def __init__(self, limit: int = 100_000) -> None:
        self._counts: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._limit = limit

    def note(self, queue: str, message_id: str) -> None:
        key = (queue, message_id)
        self._counts[key] = self._counts.pop(key, 0) + 1
        if len(self._counts) > self._limit:
            self._counts.popitem(last=False)

    def forget(self, queue: str, message_id: str) -> None:
        """Settled for good: no redelivery to excuse any more."""
        if self._counts:
            self._counts.pop((queue, message_id), None)

    def excuse(self, queue: str, message_id: str, *, counted: bool) -> int:
        """How many redeliveries of a redelivered message were releases. Without a
        broker count (``x-delivery-count``) the flag says nothing of how often, so
        each release excuses one redelivery."""
        key = (queue, message_id)
        released = self._counts.get(key, 0)
        if released and not counted:
            if released > 1:
                self._counts[key] = released - 1
            else:
                del self._counts[key]
        return released


class AMQPDelivery(Delivery):
    __slots__ = ("_intake", "_note_release", "_queue", "_settler", "_tag")

    def __init__(
        self,
        message: Message,
        subscription: Subscription,
        attempt: int,
        *,
        error: MessageError | None,
        intake: Intake,
        tag: int,
        queue: str,
        settler: Settler,
        note_release: bool = True,
    ) -> None:
        super().__init__(message, subscription, attempt, error=error)
        self._intake = intake
        self._tag = tag
        self._queue = queue
        self._settler = settler
        self._note_release = note_release

    async def _ack(self) -> None:
        try:
            self._check_channel()
            self._intake.ack(self._tag)
            self._settler.releases.forget(self._queue, self.message.id)
        finally:
            self._intake.done(self._tag, self.size)

    async def _release(self) -> None:
        try:
            if not self._intake.keeps_releases:
                await self._requeue()
            if self._note_release:
                self._settler.releases.note(self._queue, self.message.id)
        finally:
            self._intake.done(self._tag, self.size)

    async def _retry(self, delay: float, headers: Mapping[str, str]) -> None:
        try:
            self._check_channel()
            message = self.message.with_headers(headers)
            transient = not self.subscription.durable
            try:
                await self._settler.requeue_later(
                    self._queue, message, self.attempt + 1, delay, transient
                )
            except BaseException:
                await self._give_back()
                raise
            self._intake.ack(self._tag)
            self._settler.releases.forget(self._queue, self.message.id)
        finally:
            self._intake.done(self._tag, self.size)

    async def _dead_letter(self, reason: DeadLetterReason) -> None:
        try:
            self._check_channel()
            stored = DeadLetter(self.message, reason).to_stored()
            try:
                await self._settler.store_dead_letter(self.subscription.service, stored)
            except BaseException:
                await self._give_back()
                raise
            self._intake.ack(self._tag)
            self._settler.releases.forget(self._queue, self.message.id)
        finally:
            self._intake.done(self._tag, self.size)

    async def _requeue(self) -> None:
        self._check_channel()
        try:
            await self._intake.nack(self._tag)
        except Exception as exc:
            self._intake.abandon()
            raise self._lost(exc) from exc

    async def _give_back(self) -> None:
        """After a failed retry or dead-lettering: requeue, counting an attempt."""
        with contextlib.suppress(ConnectionLostError):
            await self._requeue()

    def _check_channel(self) -> None:
        channel = self._intake.channel
        if channel.is_closed or self._intake.closing:
            raise self._lost(None)

    def _lost(self, exc: BaseException | None) -> ConnectionLostError:
        reason = describe(exc, self._settler.settings) if exc else "channel closed"
        return ConnectionLostError(
            f"cannot settle {self.message.id} from {self._queue} ({reason}); "
            "the broker will deliver it again"
        )
