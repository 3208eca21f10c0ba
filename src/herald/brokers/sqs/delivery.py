"""Deliveries of SQS messages and the calls that settle them, batched per queue.

- ack: ``DeleteMessageBatch``;
- retry after a delay: ``ChangeMessageVisibilityBatch`` to the delay (whole seconds,
  rounded up, so a retry never comes back early; at most what is left of SQS's 12
  hours). The message is not copied, so a retry carries no new headers
  (``Features.retry_headers`` is False) and its next attempt is SQS's receive count;
- release: ``ChangeMessageVisibilityBatch`` to 0 (SQS counts the next receive, so a
  release counts as an attempt);
- dead-letter: Herald's own move, ``SendMessageBatch`` of the message with its
  reason (``herald-dl-*`` headers) into ``<service>.dlq``, then the delete. SQS's
  redrive policy would move it by receive count alone, without the reason.

A delivery gives its prefetch slot back and stops being kept invisible as soon as
its settlement starts, so a settlement that fails leaves the message to come back
when its visibility timeout runs out.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...broker import Delivery, Subscription
from ...deadletter import DeadLetter, DeadLetterReason
from ...errors import ErrorTable, MessageError
from ...message import Message
from ...window import Window
from .batch import Batcher
from .publisher import entry_of
from .settings import MAX_VISIBILITY
from .topology import Topology
from .wire import DIRECT_MAX, MAX_SIZE

__all__ = ["Held", "Lease", "SQSDelivery", "Settler"]


@dataclass(eq=False, slots=True)
class Held:
    """A received message kept invisible until it is settled: where it is, its
    receipt handle, when its visibility runs out (loop time) and its body size."""

    url: str
    receipt: str
    deadline: float
    received: float
    size: int = 0


@dataclass(eq=False, slots=True)
class Lease:
    """One ``consume()`` call: its window and what it holds (handed out or not yet)."""

    subscription: Subscription
    url: str
    window: Window
    held: dict[str, Held] = field(default_factory=dict)
    token: Held | None = None
    """The lock token of an exclusive queue, while this consumer holds it."""
    closed: bool = False
    on_empty: Callable[[], None] | None = None
    """Called once the closed consumer's last delivery was settled."""

    def settling(self, held: Held) -> None:
        self.held.pop(held.receipt, None)
        self.window.give(held.size)
        if self.closed and not self.window.used and self.on_empty is not None:
            callback, self.on_empty = self.on_empty, None
            callback()


class Settler:
    """Batched settlement calls for every queue of a broker."""

    def __init__(self, sqs: Any, topology: Topology, table: ErrorTable) -> None:
        self._sqs = sqs
        self._topology = topology
        self._table = table
        self._batchers: dict[tuple[str, str], Batcher] = {}

    def _batcher(self, operation: str, url: str) -> Batcher:
        batcher = self._batchers.get((operation, url))
        if batcher is None:
            method = getattr(self._sqs, operation)

            async def call(entries: list[dict[str, Any]]) -> dict[str, Any]:
                reply: dict[str, Any] = await method(QueueUrl=url, Entries=entries)
                return reply

            doing = operation.replace("_", " ").replace("batch", "on").strip()
            batcher = Batcher(call, f"{doing} {url.rsplit('/', 1)[-1]}", self._table)
            self._batchers[(operation, url)] = batcher
        return batcher

    async def delete(self, held: Held) -> None:
        await self._batcher("delete_message_batch", held.url).submit(
            {"ReceiptHandle": held.receipt}
        )

    async def change(self, held: Held, seconds: int) -> None:
        entry = {"ReceiptHandle": held.receipt, "VisibilityTimeout": seconds}
        batcher = self._batcher("change_message_visibility_batch", held.url)
        await batcher.submit(entry, key=held.receipt)  # the last change asked for wins

    async def send(
        self,
        url: str,
        message: Message,
        *,
        fifo: bool,
        dedup: str,
        limit: int = MAX_SIZE,
        delay: int = 0,
    ) -> None:
        """Send ``message`` straight to the queue at ``url``, invisible for ``delay``
        seconds (``DelaySeconds``, standard queues only)."""
        entry, size = entry_of(message, fifo, dedup=dedup, limit=limit)
        entry["MessageBody"] = entry.pop("_body")
        if delay:
            entry["DelaySeconds"] = delay
        await self._batcher("send_message_batch", url).submit(entry, size)

    async def dead_letter_queue(self, service: str) -> str:
        return await self._topology.dead_letter_queue(service)

    async def drain(self) -> None:
        await asyncio.gather(*(b.drain() for b in self._batchers.values()))


class SQSDelivery(Delivery):
    """One received message. ``attempt`` is SQS's ``ApproximateReceiveCount``."""

    __slots__ = ("_held", "_lease", "_settler")

    def __init__(
        self,
        message: Message,
        subscription: Subscription,
        attempt: int,
        *,
        error: MessageError | None,
        held: Held,
        lease: Lease,
        settler: Settler,
    ) -> None:
        super().__init__(message, subscription, attempt, error=error)
        self._held = held
        self._lease = lease
        self._settler = settler

    @property
    def size(self) -> int:
        return self._held.size

    async def _ack(self) -> None:
        self._lease.settling(self._held)
        await self._settler.delete(self._held)

    async def _retry(self, delay: float, headers: Mapping[str, str]) -> None:
        self._lease.settling(self._held)
        elapsed = asyncio.get_running_loop().time() - self._held.received
        seconds = min(math.ceil(delay), MAX_VISIBILITY - math.ceil(elapsed) - 1)
        await self._settler.change(self._held, max(0, seconds))

    async def _release(self) -> None:
        self._lease.settling(self._held)
        await self._settler.change(self._held, 0)

    async def _dead_letter(self, reason: DeadLetterReason) -> None:
        self._lease.settling(self._held)
        service = self.subscription.service
        url = await self._settler.dead_letter_queue(service)
        stored = DeadLetter(self.message, reason).to_stored()
        # straight to SQS, which takes 1 MiB: the largest message with its reason fits
        await self._settler.send(url, stored, fifo=False, dedup="", limit=DIRECT_MAX)
        await self._settler.delete(self._held)
