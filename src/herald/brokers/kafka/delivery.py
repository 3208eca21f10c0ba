"""Deliveries of Kafka records and how each settlement is done.

- ack: the record's offset is marked finished, and the ack returns after the next
  commit; the group's offset moves past it once every lower offset of its
  partition is finished too;
- retry after a delay: a copy (headers merged, attempt + 1, its due time) goes to
  the queue's retry topic for that delay (:data:`.topology.TIERS`), then the offset
  is finished; the partition it came from never waits;
- release: a copy with the same attempt goes to the queue's retry topic without a
  delay (a release is not an attempt);
- dead-letter: the message with its reason (``herald-dl-*`` headers) goes to
  ``<service>.dlq``'s topic, then the offset is finished.

A copy is stored (acknowledged by the cluster) before the offset is finished, so a
crash in between delivers the original again rather than losing it. A settlement
that fails gives its prefetch slot back and hands the record to the consumer again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping

from ...broker import Delivery, Subscription
from ...deadletter import DeadLetter, DeadLetterReason
from ...errors import MessageError
from ...message import Message
from .offsets import Ticket
from .publisher import Publisher
from .topology import Topology, tier_for

__all__ = ["KafkaDelivery", "Settlements"]


class Settlements:
    """What one consumer's deliveries settle through."""

    def __init__(
        self,
        publisher: Publisher,
        topology: Topology,
        finish: Callable[[Ticket], None],
        give_back: Callable[[KafkaDelivery], None],
        redeliver: Callable[[KafkaDelivery], None],
        committed: Callable[[], Awaitable[None]],
    ) -> None:
        self.committed = committed
        self.publisher = publisher
        self.topology = topology
        self.finish = finish
        self.give_back = give_back
        self.redeliver = redeliver


class KafkaDelivery(Delivery):
    __slots__ = ("_settlements", "ticket")

    def __init__(
        self,
        message: Message,
        subscription: Subscription,
        attempt: int,
        ticket: Ticket,
        settlements: Settlements,
        *,
        error: MessageError | None = None,
    ) -> None:
        super().__init__(message, subscription, attempt, error=error)
        self.ticket = ticket
        self._settlements = settlements

    async def _ack(self) -> None:
        await self._done(None)

    async def _retry(self, delay: float, headers: Mapping[str, str]) -> None:
        names = self._settlements.topology.names
        tier = tier_for(delay)
        due = int(time.time() * 1000 + delay * 1000) if delay > 0 else 0
        copy = self.message.with_headers(headers)
        topic = names.retry(self.subscription.queue, tier)
        await self._done((topic, copy, self.attempt + 1, due))

    async def _release(self) -> None:
        topic = self._settlements.topology.names.retry(self.subscription.queue, 0)
        await self._done((topic, self.message, self.attempt, 0))

    async def _dead_letter(self, reason: DeadLetterReason) -> None:
        settlements = self._settlements
        topic = await settlements.topology.dead_letter_topic(self.subscription.service)
        stored = DeadLetter(self.message, reason).to_stored()
        await self._done((topic, stored, 1, 0))

    async def _done(self, copy: tuple[str, Message, int, int] | None) -> None:
        settlements = self._settlements
        try:
            if copy is not None:
                await settlements.publisher.send([copy])
        except BaseException:
            settlements.give_back(self)
            settlements.redeliver(self)
            raise
        settlements.finish(self.ticket)
        settlements.give_back(self)
        await settlements.committed()
