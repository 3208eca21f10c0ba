"""One JetStream message handed to a queue's consumer, and the leases kept on them.

Acks, naks and in-progress acks are plain publishes to the message's reply subject.
nats-py buffers publishes while it reconnects, so a settlement attempted during an
outage would be sent to whichever server comes back; instead it raises
:class:`ConnectionLostError` and JetStream redelivers the message once its
``ack_wait`` lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NATSError

from ..broker import Delivery, Subscription
from ..deadletter import DeadLetter, DeadLetterReason
from ..errors import BrokerError, ConnectionLostError
from ..message import Message

__all__ = ["DeadLetterSink", "Leases", "NATSDelivery"]

log = logging.getLogger("herald.brokers.nats")

DeadLetterSink = Callable[[str, Message, str], Awaitable[None]]
"""``sink(service, stored_message, dedup_id)`` stores a dead letter durably."""


class Leases:
    """Extends the ``ack_wait`` of held messages with ``+WIP`` while handlers run."""

    def __init__(self, nc: Client, ack_wait: float) -> None:
        self._nc = nc
        self._every = max(ack_wait / 3, 0.05)
        self._held: dict[str, tuple[Msg, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def hold(self, msg: Msg) -> None:
        self._held[msg.reply] = (msg, time.monotonic())
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="herald:nats:leases")

    def drop(self, msg: Msg) -> None:
        self._held.pop(msg.reply, None)

    async def close(self) -> None:
        self._held.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while self._held:
            await asyncio.sleep(self._every / 2)
            if not self._nc.is_connected:
                continue
            now = time.monotonic()
            for reply, (msg, since) in list(self._held.items()):
                if now - since >= self._every and reply in self._held:
                    self._held[reply] = (msg, now)
                    try:
                        await msg.in_progress()
                    except NATSError as exc:
                        log.debug("in-progress ack failed: %s", exc)


class NATSDelivery(Delivery):
    __slots__ = ("_done", "_msg", "_nc", "_settled", "_sink")

    def __init__(
        self,
        nc: Client,
        msg: Msg,
        message: Message,
        subscription: Subscription,
        done: Callable[[], None],
        sink: DeadLetterSink,
    ) -> None:
        super().__init__(message, subscription, msg.metadata.num_delivered)
        self._nc = nc
        self._msg = msg
        self._done = done
        self._sink = sink
        self._settled = False

    async def ack(self) -> None:
        await self._reply(self._msg.ack)

    async def retry(self, delay: float, headers: Mapping[str, str]) -> None:
        # JetStream redelivers the stored message: the retry headers cannot be added.
        await self._reply(lambda: self._msg.nak(delay=delay if delay > 0 else None))

    async def release(self) -> None:
        await self._reply(self._msg.nak)

    async def dead_letter(self, reason: DeadLetterReason) -> None:
        if self._settled:
            return
        meta = self._msg.metadata
        dedup = f"dl:{meta.stream}:{meta.sequence.stream}:{meta.consumer}"
        if reason.first_failure is None:
            # Retry headers do not survive a nak, so the runtime cannot tell when the
            # first failure was; the last one is the best honest bound we have.
            reason = replace(reason, first_failure=reason.last_failure or datetime.now(UTC))
        stored = DeadLetter(self.message, reason).to_stored()
        await self._sink(self.subscription.service, stored, dedup)
        await self._reply(self._msg.ack)

    async def _reply(self, send: Callable[[], Awaitable[None]]) -> None:
        if self._settled:
            return
        # Settled locally either way: on failure the lease is dropped so that JetStream
        # redelivers the message once ack_wait lapses.
        self._settled = True
        self._done()
        if not self._nc.is_connected:
            raise ConnectionLostError(
                f"connection to NATS lost before settling {self.message.id} on "
                f"{self.subscription.queue}; it will be redelivered after ack_wait"
            )
        try:
            await send()
        except NATSError as exc:
            raise ConnectionLostError(
                f"could not settle {self.message.id} on {self.subscription.queue}: {exc!r}; "
                "it will be redelivered after ack_wait"
            ) from exc


def settle_quietly(msgs: list[Msg], nc: Client) -> Awaitable[None]:
    """Nak messages received but never handed out (best effort)."""

    async def run() -> None:
        if not nc.is_connected:
            return
        for msg in msgs:
            with contextlib.suppress(NATSError, BrokerError):
                await msg.nak()

    return run()
