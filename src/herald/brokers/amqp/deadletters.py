"""``DeadLetterAdmin``: reading, replaying and purging a service's ``<service>.dlq``.

AMQP queues cannot be browsed, so the queue is read with ``basic.get`` on a
channel of its own without acking; the messages not removed are then given back
(``basic.nack`` with requeue: in their place, with their expiry, so
``dlq_retention`` still counts from when they were dead-lettered), and the reader
waits until the queue counts them again, so that the next operation sees them (a
quorum queue applies the requeue asynchronously). Replayed messages are published
(confirmed) to their original queue before their dead-letter copy is acked.

A dead-letter queue is input like any queue (anyone may publish to it): a message
that does not decode is listed as it came, and a dead letter is replayed only into
a queue of the same service that exists.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec

from ...broker import ProgressCallback, dead_letter_queue
from ...deadletter import DeadLetter, DeadLetterReason
from ...errors import BrokerError, DecodeError
from ...message import Message
from .connection import AMQPConnection
from .publisher import Outgoing, Publisher
from .settings import AMQPSettings
from .wire import best_effort, header_text, properties_for, read

__all__ = ["DeadLetterQueue"]

PUT_BACK_CHECKS = 200
"""How often to look whether messages given back are counted again (every 10 ms)."""

Declare = Callable[[str], Awaitable[str]]
"""Declares the dead-letter queue of a service; returns its server name."""


class DeadLetterQueue:
    """The dead-letter operations of one broker."""

    def __init__(
        self,
        settings: AMQPSettings,
        connection: AMQPConnection,
        publisher: Publisher,
        declare: Declare,
    ) -> None:
        self._settings = settings
        self._connection = connection
        self._publisher = publisher
        self._declare = declare

    async def read(self, service: str, limit: int | None) -> list[DeadLetter]:
        async with self._reading(service, limit) as reading:
            return [self._letter(item) for item in reading.items]

    async def replay(
        self,
        service: str,
        ids: Collection[str] | None,
        progress: ProgressCallback | None,
        edited: Message | None = None,
    ) -> int:
        """Replay the chosen letters; with ``edited``, the first of them as that message."""
        async with self._reading(service, None) as reading:
            chosen = [(item, self._letter(item)) for item in reading.items]
            chosen = [(i, dl) for i, dl in chosen if ids is None or dl.message.id in ids]
            if edited is not None:
                chosen = chosen[:1]
            await self._check_queues(service, {letter.reason.queue for _, letter in chosen})
            for done, (item, letter) in enumerate(chosen, 1):
                message = edited or letter.for_replay()
                queue = self._settings.name(letter.reason.queue)
                await self._publisher.publish(
                    [Outgoing("", queue, message.body, properties_for(message))]
                )
                await reading.remove(item)
                if progress is not None:
                    progress(done, len(chosen))
        return len(chosen)

    async def purge(self, service: str, ids: Collection[str] | None) -> int:
        if ids is None:
            queue = await self._declare(service)
            channel = await self._connection.channel()
            try:
                with self._connection.errors.converting(f"purging {queue}"):
                    ok = await channel.queue_purge(queue)
                return int(ok.message_count or 0)
            finally:
                await _close(channel)
        async with self._reading(service, None) as reading:
            for item in reading.items:
                if self._letter(item).message.id in ids:
                    await reading.remove(item)
        return reading.removed

    @contextlib.asynccontextmanager
    async def _reading(self, service: str, limit: int | None) -> AsyncIterator[_Reading]:
        """The messages now in the queue (up to ``limit``), unacked; the ones not
        removed go back in their place on exit."""
        queue = await self._declare(service)
        channel = await self._connection.channel()
        try:
            with self._connection.errors.converting(f"reading {queue}"):
                ok = await channel.queue_declare(queue, passive=True)
                count = int(ok.message_count or 0)
                reading = _Reading(self._connection, channel, queue, count)
                for _ in range(count if limit is None else min(count, limit)):
                    item = await channel.basic_get(queue, no_ack=False)
                    if isinstance(item.delivery, spec.Basic.GetEmpty):
                        break
                    reading.items.append(item)
            yield reading
            await reading.put_back()
        finally:
            await _close(channel)

    async def _check_queues(self, service: str, queues: set[str]) -> None:
        names = sorted(queues)
        for queue in names:
            if not queue.startswith(f"{service}.") or queue == dead_letter_queue(service):
                raise BrokerError(
                    f"a dead letter of {service} names queue {queue[:200]!r}, not one of "
                    f"{service}'s; nothing was replayed"
                )
        found = await self._connection.probe([self._settings.name(q) for q in names])
        for queue, stats in zip(names, found, strict=True):
            if stats is None:
                raise BrokerError(f"queue {queue!r} no longer exists; cannot replay")

    def _letter(self, item: DeliveredMessage) -> DeadLetter:
        try:
            letter = DeadLetter.from_stored(read(item))
        except DecodeError:
            letter = DeadLetter.from_stored(best_effort(item))
        if letter.reason.queue:
            return letter
        return DeadLetter(letter.message, self._broker_reason(item))

    def _broker_reason(self, item: DeliveredMessage) -> DeadLetterReason:
        """The reason of a message RabbitMQ itself dead-lettered, from its ``x-death``."""
        deaths = (item.header.properties.headers or {}).get("x-death")
        first = deaths[0] if isinstance(deaths, list) and deaths else None
        death: Mapping[str, Any] = first if isinstance(first, dict) else {}
        queue = self._settings.herald_name(header_text(death.get("queue", "")))
        why = header_text(death.get("reason", "unknown"))
        count = death.get("count", 1)
        return DeadLetterReason(
            queue=queue,
            error_type="BrokerDeadLettered",
            error_message=f"dead-lettered by RabbitMQ ({why})",
            attempts=count if isinstance(count, int) and count > 0 else 1,
        )


class _Reading:
    """Messages taken from a queue with ``basic.get`` and not acked yet."""

    def __init__(
        self, connection: AMQPConnection, channel: AbstractChannel, queue: str, count: int
    ) -> None:
        self.items: list[DeliveredMessage] = []
        self._removed: set[int] = set()
        self._connection = connection
        self._channel = channel
        self._queue = queue
        self._count = count

    @property
    def removed(self) -> int:
        return len(self._removed)

    async def remove(self, item: DeliveredMessage) -> None:
        tag = item.delivery_tag or 0
        with self._connection.errors.converting(f"removing a message from {self._queue}"):
            await self._channel.basic_ack(tag)
        self._removed.add(tag)

    async def put_back(self) -> None:
        """Requeue the rest and wait (a little) until the queue counts them again."""
        kept = [tag for item in self.items if (tag := item.delivery_tag or 0) not in self._removed]
        if not kept:
            return
        last = max(kept)  # ``multiple`` up to a tag that is still unacked
        expected = self._count - self.removed
        with self._connection.errors.converting(f"putting messages back in {self._queue}"):
            await self._channel.basic_nack(last, multiple=True, requeue=True)
            for _ in range(PUT_BACK_CHECKS):
                ok = await self._channel.queue_declare(self._queue, passive=True)
                if int(ok.message_count or 0) >= expected:
                    return
                await asyncio.sleep(0.01)


async def _close(channel: AbstractChannel) -> None:
    with contextlib.suppress(Exception):
        await channel.close()
