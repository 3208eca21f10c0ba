"""``DeadLetterAdmin``: reading, replaying and purging a service's ``<service>.dlq``.

AMQP queues cannot be browsed, so the queue is read with ``basic.get`` on a
channel of its own without acking; closing that channel puts every message not
acked back in its place (with its expiry: ``dlq_retention`` still counts from when
it was dead-lettered). Replayed messages are published (confirmed) to their
original queue before their dead-letter copy is acked.

A dead-letter queue is input like any queue (anyone may publish to it): a message
that does not decode is listed as it came, and a dead letter is replayed only into
a queue of the same service that exists.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec

from ...broker import ProgressCallback, dead_letter_queue
from ...deadletter import DeadLetter, DeadLetterReason
from ...errors import BrokerError, DecodeError
from .connection import AMQPConnection
from .publisher import Outgoing, Publisher
from .settings import AMQPSettings
from .wire import best_effort, header_text, properties_for, read

__all__ = ["DeadLetterQueue"]

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
        async with self._reading(service, limit) as (_channel, got):
            return [self._letter(item) for item in got]

    async def replay(
        self, service: str, ids: Collection[str] | None, progress: ProgressCallback | None
    ) -> int:
        async with self._reading(service, None) as (channel, got):
            chosen = [(item, self._letter(item)) for item in got]
            chosen = [(i, dl) for i, dl in chosen if ids is None or dl.message.id in ids]
            await self._check_queues(service, {letter.reason.queue for _, letter in chosen})
            for done, (item, letter) in enumerate(chosen, 1):
                message = letter.for_replay()
                queue = self._settings.name(letter.reason.queue)
                await self._publisher.publish(
                    [Outgoing("", queue, message.body, properties_for(message))]
                )
                with self._connection.errors.converting(f"acking a dead letter of {service}"):
                    await channel.basic_ack(item.delivery_tag or 0)
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
        count = 0
        async with self._reading(service, None) as (channel, got):
            for item in got:
                if self._letter(item).message.id in ids:
                    with self._connection.errors.converting(f"purging a dead letter of {service}"):
                        await channel.basic_ack(item.delivery_tag or 0)
                    count += 1
        return count

    @contextlib.asynccontextmanager
    async def _reading(
        self, service: str, limit: int | None
    ) -> AsyncIterator[tuple[AbstractChannel, list[DeliveredMessage]]]:
        """Yield (channel, the messages now in the queue, unacked) and put back the rest."""
        queue = await self._declare(service)
        channel = await self._connection.channel()
        try:
            with self._connection.errors.converting(f"reading {queue}"):
                ok = await channel.queue_declare(queue, passive=True)
                count = int(ok.message_count or 0)
                got: list[DeliveredMessage] = []
                for _ in range(count if limit is None else min(count, limit)):
                    item = await channel.basic_get(queue, no_ack=False)
                    if isinstance(item.delivery, spec.Basic.GetEmpty):
                        break
                    got.append(item)
            yield channel, got
        finally:
            await _close(channel)

    async def _check_queues(self, service: str, queues: set[str]) -> None:
        for queue in queues:
            if not queue.startswith(f"{service}.") or queue == dead_letter_queue(service):
                raise BrokerError(
                    f"a dead letter of {service} names queue {queue[:200]!r}, not one of "
                    f"{service}'s; nothing was replayed"
                )
            channel = await self._connection.channel()
            try:
                await channel.queue_declare(self._settings.name(queue), passive=True)
            except Exception as exc:
                raise BrokerError(f"queue {queue!r} no longer exists; cannot replay") from exc
            finally:
                await _close(channel)

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


async def _close(channel: AbstractChannel) -> None:
    with contextlib.suppress(Exception):
        await channel.close()
