"""Deliveries of the memory broker."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ...broker import Delivery, Subscription
from ...deadletter import DeadLetter, DeadLetterReason
from .store import Entry, Hub, Queue

__all__ = ["MemoryDelivery"]


class MemoryDelivery(Delivery):
    __slots__ = ("_done", "_entry", "_hub", "_later", "_queue")

    def __init__(
        self,
        hub: Hub,
        queue: Queue,
        entry: Entry,
        subscription: Subscription,
        done: Callable[[int], None],
        later: Callable[[float, Queue, Entry], None],
    ) -> None:
        super().__init__(entry.message, subscription, entry.deliveries)
        self._hub = hub
        self._queue = queue
        self._entry = entry
        self._done = done
        self._later = later

    def _forget(self) -> None:
        self._queue.unsettled.discard(self._entry)
        self._done(len(self._entry.message.body))

    async def _ack(self) -> None:
        self._forget()

    async def _retry(self, delay: float, headers: Mapping[str, str]) -> None:
        self._forget()
        self._entry.message = self._entry.message.with_headers(headers)
        self._later(delay, self._queue, self._entry)

    async def _release(self) -> None:
        self._forget()
        self._entry.deliveries -= 1
        self._queue.put(self._entry, front=True)

    async def _dead_letter(self, reason: DeadLetterReason) -> None:
        self._forget()
        stored = DeadLetter(self._entry.message, reason).to_stored()
        self._hub.dead.setdefault(self.subscription.service, []).append(stored)
