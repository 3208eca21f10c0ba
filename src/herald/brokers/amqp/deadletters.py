"""Reading, replaying and purging a service's dead-letter queue ``<service>.dlq``.

AMQP queues cannot be browsed, so the queue is read with ``basic.get`` on a
channel of its own without acking; closing that channel puts every message not
acked back in its place. Replayed messages are published (confirmed) to their
original queue before their dead-letter copy is acked.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec

from ..broker import ProgressCallback
from ..deadletter import DeadLetter, DeadLetterReason
from ..errors import BrokerError, DecodeError
from .amqp_connection import AMQPConnection, describe_error
from .amqp_publisher import Outgoing, Publisher
from .amqp_settings import AMQPSettings
from .amqp_wire import decode_delivered, header_text, properties_for

__all__ = ["DeadLetterQueue"]

QueueDeclarer = Callable[[AbstractChannel, str], Awaitable[str]]


class DeadLetterQueue:
    """The dead-letter operations of one broker."""

    def __init__(
        self,
        settings: AMQPSettings,
        connection: AMQPConnection,
        publisher: Publisher,
        declare: QueueDeclarer,
    ) -> None:
        self._settings = settings
        self._connection = connection
        self._publisher = publisher
        self._declare = declare

    async def read(self, service: str, limit: int | None) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        async with self._reading(service) as (_channel, got):
            for item in got:
                if limit is not None and len(letters) >= limit:
                    break
                letters.append(_letter(item, self._settings))
        return letters

    async def replay(
        self, service: str, ids: Collection[str] | None, progress: ProgressCallback | None
    ) -> int:
        async with self._reading(service) as (channel, got):
            chosen = [(item, _letter(item, self._settings)) for item in got]
            chosen = [
                (i, letter) for i, letter in chosen if ids is None or letter.message.id in ids
            ]
            await self._check_queues({letter.reason.queue for _, letter in chosen})
            for done, (item, letter) in enumerate(chosen, 1):
                message = letter.for_replay()
                await self._publisher.publish(
                    [
                        Outgoing(
                            "",
                            self._settings.name(letter.reason.queue),
                            message.body,
                            properties_for(message),
                        )
                    ]
                )
                await channel.basic_ack(_tag(item))
                if progress is not None:
                    progress(done, len(chosen))
        return len(chosen)

    async def purge(self, service: str, ids: Collection[str] | None) -> int:
        if ids is None:
            channel = await self._connection.channel()
            try:
                queue = await self._declare(channel, service)
                ok = await channel.queue_purge(queue)
                return int(ok.message_count or 0)
            finally:
                await _close(channel)
        count = 0
        async with self._reading(service) as (channel, got):
            for item in got:
                if _letter(item, self._settings).message.id in ids:
                    await channel.basic_ack(_tag(item))
                    count += 1
        return count

    @contextlib.asynccontextmanager
    async def _reading(
        self, service: str
    ) -> AsyncIterator[tuple[AbstractChannel, list[DeliveredMessage]]]:
        """Yield (channel, every message now in the queue, unacked) and put back the rest."""
        channel = await self._connection.channel()
        try:
            queue = await self._declare(channel, service)
            ok = await channel.queue_declare(queue, passive=True)
            got: list[DeliveredMessage] = []
            for _ in range(int(ok.message_count or 0)):
                item = await channel.basic_get(queue, no_ack=False)
                if isinstance(item.delivery, spec.Basic.GetEmpty):
                    break
                got.append(item)
            yield channel, got
        except BrokerError:
            raise
        except Exception as exc:
            raise BrokerError(
                f"dead letters of {service}: {describe_error(exc, self._settings)}"
            ) from exc
        finally:
            await _close(channel)

    async def _check_queues(self, queues: set[str]) -> None:
        for queue in queues:
            channel = await self._connection.channel()
            try:
                await channel.queue_declare(self._settings.name(queue), passive=True)
            except Exception as exc:
                raise BrokerError(f"queue {queue!r} no longer exists; cannot replay") from exc
            finally:
                await _close(channel)


def _letter(item: DeliveredMessage, settings: AMQPSettings) -> DeadLetter:
    try:
        message, _ = decode_delivered(item)
    except DecodeError as exc:
        raise BrokerError(f"unreadable dead letter: {exc}") from exc
    letter = DeadLetter.from_stored(message)
    if letter.reason.queue:
        return letter
    return DeadLetter(letter.message, _broker_reason(item, settings))


def _broker_reason(item: DeliveredMessage, settings: AMQPSettings) -> DeadLetterReason:
    """The reason of a message RabbitMQ itself dead-lettered, from its ``x-death``."""
    deaths = (item.header.properties.headers or {}).get("x-death")
    first = deaths[0] if isinstance(deaths, list) and deaths else None
    death: Mapping[str, Any] = first if isinstance(first, dict) else {}
    queue = header_text(death.get("queue", ""))
    prefix = f"{settings.namespace}." if settings.namespace else ""
    queue = queue.removeprefix(prefix).replace("+", "*")
    why = header_text(death.get("reason", "unknown"))
    count = death.get("count", 1)
    return DeadLetterReason(
        queue=queue,
        error_type="BrokerDeadLettered",
        error_message=f"dead-lettered by RabbitMQ ({why})",
        attempts=count if isinstance(count, int) else 1,
    )


def _tag(item: DeliveredMessage) -> int:
    tag = item.delivery_tag
    assert tag is not None
    return tag


async def _close(channel: AbstractChannel) -> None:
    with contextlib.suppress(Exception):
        await channel.close()
