"""One JetStream message handed to a queue's consumer, and the leases kept on them.

A delivery is leased for its consumer's ``ack_wait``. While it is held (received,
handed out, its handler running or waiting in its key's lane), :class:`Leases` sends
an in-progress ack (``+WIP``) every third of that ``ack_wait``, which restarts
JetStream's timer: the message is not redelivered, to this process or another, for
as long as this process is alive and connected. When the process dies (or stays
disconnected past ``ack_wait``), the leases stop and JetStream redelivers. When the
broker closes, whatever is still held is given back with a ``nak`` (nothing can settle
it any more), so it comes back at once instead of after ``ack_wait``.

Acks, naks and in-progress acks are plain publishes to the message's reply subject.
nats-py buffers publishes while it reconnects, so a settlement attempted during an
outage would be sent to whichever server comes back; instead it raises
:class:`herald.ConnectionLostError`. Every settlement first gives back the prefetch
slot and drops the lease, so a failed one leaves the message to JetStream, which
redelivers it once ``ack_wait`` lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from nats.aio.client import Client
from nats.aio.msg import Msg

from ...broker import Delivery, Subscription
from ...deadletter import DeadLetterReason
from ...errors import ConnectionLostError, HeraldError, MessageError
from ...message import Message
from ...tasks import cancel_and_wait
from .deadletters import DeadLetterStore
from .errors import TABLE

__all__ = ["Leases", "NATSDelivery"]

log = logging.getLogger("herald.brokers.nats")


@dataclass(slots=True)
class _Lease:
    msg: Msg
    queue: str
    every: float
    last: float


class Leases:
    """Sends ``+WIP`` for every held message, a third of its ``ack_wait`` apart, and
    counts the held messages per queue (consumer name) for :mod:`.presence`."""

    def __init__(self, nc: Client, on_change: Callable[[], None] = lambda: None) -> None:
        self._nc = nc
        self._held: dict[str, _Lease] = {}
        self._counts: Counter[str] = Counter()
        self.on_change = on_change
        """Called whenever the held counts change."""
        self._task: asyncio.Task[None] | None = None

    def hold(self, msg: Msg, ack_wait: float, queue: str) -> None:
        if msg.reply in self._held:
            return
        self._held[msg.reply] = _Lease(msg, queue, max(ack_wait / 3, 0.05), time.monotonic())
        self._counts[queue] += 1
        self.on_change()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="herald:nats:leases")

    def drop(self, msg: Msg) -> None:
        lease = self._held.pop(msg.reply, None)
        if lease is not None:
            self._counts[lease.queue] -= 1
            self.on_change()

    def counts(self) -> dict[str, int]:
        """Held messages per queue (consumer name), those with any."""
        return {queue: n for queue, n in self._counts.items() if n > 0}

    def abandon(self, queue: str) -> None:
        """Stop extending the leases of ``queue``'s messages: JetStream redelivers
        each once its ``ack_wait`` lapses (the queue's exclusive hold was lost)."""
        for lease in [lease for lease in self._held.values() if lease.queue == queue]:
            self.drop(lease.msg)

    async def give_back(self) -> None:
        """``nak`` every held message (the broker is closing: nothing will settle
        them now), so that they are redelivered at once, before anything newer."""
        held = [lease.msg for lease in self._held.values()]
        for msg in held:
            self.drop(msg)
        if held and self._nc.is_connected:
            with contextlib.suppress(HeraldError), TABLE.converting("giving back messages"):
                for msg in held:
                    await msg.nak()

    async def close(self) -> None:
        self._held.clear()
        self._counts.clear()
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while self._held:
            await asyncio.sleep(min(lease.every for lease in self._held.values()) / 2)
            if not self._nc.is_connected:
                continue
            now = time.monotonic()
            for reply, lease in list(self._held.items()):
                if now - lease.last >= lease.every and reply in self._held:
                    lease.last = now
                    try:
                        with TABLE.converting("extending a lease"):
                            await lease.msg.in_progress()
                    except HeraldError as exc:
                        log.debug("in-progress ack failed: %s", exc)


class NATSDelivery(Delivery):
    __slots__ = ("_done", "_msg", "_nc", "_store")

    def __init__(
        self,
        nc: Client,
        msg: Msg,
        message: Message,
        subscription: Subscription,
        done: Callable[[Msg], None],
        store: DeadLetterStore,
        *,
        error: MessageError | None = None,
    ) -> None:
        super().__init__(message, subscription, msg.metadata.num_delivered, error=error)
        self._nc = nc
        self._msg = msg
        self._done = done
        self._store = store

    async def _ack(self) -> None:
        self._done(self._msg)
        if self._nc.is_connected:
            try:
                await self._msg.ack()
                return
            except HeraldError:
                raise
            except Exception as exc:
                raise TABLE.convert(exc, self._settling()) from exc
        raise self._lost()

    async def _retry(self, delay: float, headers: Mapping[str, str]) -> None:
        # JetStream redelivers the stored message: the retry headers cannot be added.
        await self._reply(lambda: self._msg.nak(delay=delay if delay > 0 else None))

    async def _release(self) -> None:
        await self._reply(self._msg.nak)

    async def _dead_letter(self, reason: DeadLetterReason) -> None:
        meta = self._msg.metadata
        dedup = f"dl:{meta.stream}:{meta.sequence.stream}:{meta.consumer}"
        if reason.first_failure is None:
            # Retry headers do not survive a nak, so the runtime cannot tell when the
            # first failure was; the last one is the best honest bound we have.
            reason = replace(reason, first_failure=reason.last_failure or datetime.now(UTC))
        try:
            await self._store.store(self.subscription.service, self.message, reason, dedup)
        except BaseException:
            self._done(self._msg)
            raise
        await self._reply(self._msg.ack)

    async def _reply(self, send: Callable[[], Awaitable[None]]) -> None:
        self._done(self._msg)
        if not self._nc.is_connected:
            raise self._lost()
        with TABLE.converting(self._settling()):
            await send()

    def _settling(self) -> str:
        return f"settling {self.message.id} on {self.subscription.queue}"

    def _lost(self) -> ConnectionLostError:
        return ConnectionLostError(
            f"connection to NATS lost before settling {self.message.id} on "
            f"{self.subscription.queue}; it will be redelivered after ack_wait"
        )
