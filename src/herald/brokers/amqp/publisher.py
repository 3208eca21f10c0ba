"""Publishing with publisher confirms, pipelined, at least once across reconnects.

All messages of a batch are written at once on one confirm-mode channel and the
call returns when the broker confirmed every one. A nack or a confirm timeout
raises :class:`PublishError`, and the channel that was nacked is retired: the next
publish opens a fresh one. RabbitMQ 3.10 nacked every later publish of a channel
opened while the leader of its quorum queues had just been SIGKILLed, and none of a
fresh channel's (tests/cluster, docs/reliability.md): the channel's queue client
most likely kept the dead leader it read from the queue's record. Messages whose
confirm was still outstanding when the connection dropped are published again on
the next connection (they may then be stored twice: at least once, never silently
dropped); if no connection comes back within ``reconnect_timeout`` the call raises
:class:`ConnectionLostError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import aiormq
from aiormq.abc import AbstractChannel
from pamqp import commands as spec

from ...errors import BrokerError, ConnectionLostError, MessageTooLargeError, PublishError
from .batch import can_write_batch, write_batch
from .connection import AMQPConnection
from .errors import describe, too_large

__all__ = ["Outgoing", "Publisher", "close_reason"]

log = logging.getLogger("herald.amqp")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish: where to, and its encoded form."""

    exchange: str
    routing_key: str
    body: bytes
    properties: spec.Basic.Properties


class _Lost:
    """Marks a publish whose fate is unknown because the connection dropped."""


_LOST = _Lost()
Outcome = PublishError | ConnectionLostError | _Lost | None


class Publisher:
    """Publishes on one confirm-mode channel, reopened when it closes.

    Single messages published while another publish awaits its confirm are gathered
    for one event-loop turn and written as one batch (concurrent handlers publishing
    one event each then cost one socket write, not one each).
    """

    def __init__(self, connection: AMQPConnection) -> None:
        self._connection = connection
        self._channel: AbstractChannel | None = None
        self._opening = asyncio.Lock()
        self._in_flight = 0
        self._gathered: list[tuple[Outgoing, asyncio.Future[None]]] = []
        self._batches: set[asyncio.Task[None]] = set()
        self._retiring: set[asyncio.Task[None]] = set()

    async def publish(self, items: Sequence[Outgoing]) -> None:
        if len(items) == 1 and self._in_flight:
            await self._gather(items[0])
            return
        self._in_flight += 1
        try:
            outcomes = await self._outcomes(list(items))
        finally:
            self._in_flight -= 1
        for outcome in outcomes:
            if outcome is not None:
                raise outcome

    async def close(self) -> None:
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            try:
                await channel.close()
            except Exception as exc:
                log.debug("closing the publish channel failed: %s", describe(exc))

    async def _outcomes(
        self, items: list[Outgoing]
    ) -> list[PublishError | ConnectionLostError | None]:
        """Publish ``items``, again after a reconnect where the confirm was lost."""
        outcomes: list[PublishError | ConnectionLostError | None] = [None] * len(items)
        pending = list(range(len(items)))
        while pending:
            channel = await self._open()
            batch = [items[index] for index in pending]
            results: Sequence[Outcome]
            if can_write_batch(channel):
                results = await self._send_batch(channel, batch)
            elif len(batch) == 1:
                results = [await self._send(channel, batch[0])]
            else:
                results = await asyncio.gather(*(self._send(channel, item) for item in batch))
            lost = []
            for index, result in zip(pending, results, strict=True):
                if isinstance(result, _Lost):
                    lost.append(index)
                else:
                    outcomes[index] = result
            if lost:
                log.warning(
                    "connection lost before %d publish(es) were confirmed; publishing again",
                    len(lost),
                )
            pending = lost
        return outcomes

    async def _gather(self, item: Outgoing) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._gathered.append((item, future))
        if len(self._gathered) == 1:
            loop.call_soon(self._start_batch)
        await future

    def _start_batch(self) -> None:
        gathered, self._gathered = self._gathered, []
        task = asyncio.get_running_loop().create_task(self._publish_gathered(gathered))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _publish_gathered(
        self, gathered: list[tuple[Outgoing, asyncio.Future[None]]]
    ) -> None:
        self._in_flight += 1
        try:
            outcomes = await self._outcomes([item for item, _ in gathered])
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else BrokerError("publishing was cancelled")
            for _, future in gathered:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._in_flight -= 1
        for (_, future), outcome in zip(gathered, outcomes, strict=True):
            if future.done():
                continue
            if outcome is None:
                future.set_result(None)
            else:
                future.set_exception(outcome)

    async def _open(self) -> AbstractChannel:
        channel = self._channel
        if channel is not None and not channel.is_closed:
            return channel
        async with self._opening:
            channel = self._channel
            if channel is None or channel.is_closed:
                channel = self._channel = await self._connection.channel(confirms=True)
            return channel

    async def _send(self, channel: AbstractChannel, item: Outgoing) -> Outcome:
        timeout = self._connection.settings.confirm_timeout
        try:
            confirmation = await cast(aiormq.Channel, channel).basic_publish(
                item.body,
                exchange=item.exchange,
                routing_key=item.routing_key,
                properties=item.properties,
                timeout=timeout,
                wait=False,
            )
        except aiormq.DeliveryError:
            return self._refused(channel, item.properties.message_id)
        except TimeoutError:
            return PublishError(
                f"message {item.properties.message_id} not confirmed within {timeout:g}s"
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if (task is not None and task.cancelling()) or not channel.is_closed:
                raise
            return self._after_channel_closed(channel, None, item)
        except Exception as exc:
            return self._after_channel_closed(channel, exc, item)
        if isinstance(confirmation, spec.Basic.Nack):
            return self._refused(channel, item.properties.message_id)
        return None

    async def _send_batch(self, channel: AbstractChannel, items: list[Outgoing]) -> list[Outcome]:
        timeout = self._connection.settings.confirm_timeout
        try:
            futures = await write_batch(
                channel, [(i.exchange, i.routing_key, i.body, i.properties) for i in items]
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if (task is not None and task.cancelling()) or not channel.is_closed:
                raise
            return [self._after_channel_closed(channel, None, item) for item in items]
        except Exception as exc:
            return [self._after_channel_closed(channel, exc, item) for item in items]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await _all_done(futures)
        return [
            self._outcome(channel, item, future)
            for item, future in zip(items, futures, strict=True)
        ]

    def _outcome(
        self, channel: AbstractChannel, item: Outgoing, future: asyncio.Future[Any]
    ) -> Outcome:
        message_id = item.properties.message_id
        if not future.done():
            future.cancel()
            timeout = self._connection.settings.confirm_timeout
            return PublishError(f"message {message_id} not confirmed within {timeout:g}s")
        if future.cancelled():
            return self._after_channel_closed(channel, None, item)
        exc = future.exception()
        if isinstance(exc, aiormq.DeliveryError):
            return self._refused(channel, message_id)
        if exc is not None:
            return self._after_channel_closed(channel, exc, item)
        if isinstance(future.result(), spec.Basic.Nack):
            return self._refused(channel, message_id)
        return None

    def _refused(self, channel: AbstractChannel, message_id: str | None) -> PublishError:
        """A nack: retire ``channel`` so that the next publish opens a fresh one."""
        if self._channel is channel:
            self._channel = None
            task = asyncio.get_running_loop().create_task(self._retire(channel))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return PublishError(f"the broker refused message {message_id}: nack")

    async def _retire(self, channel: AbstractChannel) -> None:
        """Close ``channel`` once the confirms still due on it arrived (or timed out)."""
        due = [f for f in getattr(channel, "confirmations", {}).values() if not f.done()]
        if due:
            await asyncio.wait(due, timeout=self._connection.settings.confirm_timeout)
        if not channel.is_closed:
            try:
                await channel.close()
            except Exception as exc:
                log.debug("closing a nacked publish channel failed: %s", describe(exc))

    def _after_channel_closed(
        self, channel: AbstractChannel, exc: BaseException | None, item: Outgoing
    ) -> PublishError | _Lost:
        exc = exc or close_reason(channel)
        refused = too_large(exc)
        if refused is not None:
            size, limit = refused
            message_id = item.properties.message_id or "?"
            if size == len(item.body):
                return MessageTooLargeError(message_id, size, limit, "the RabbitMQ server")
            return PublishError(
                f"message {message_id} not published: the server closed the channel over "
                f"another message of {size:,} bytes (its limit is {limit:,})"
            )
        if channel.connection.is_closed or not self._connection.is_connected:
            return _LOST
        if exc is None:
            return PublishError("publish failed: channel closed")
        error = self._connection.errors.convert(exc, "publishing", PublishError)
        error.__cause__ = exc
        return cast(PublishError, error)


async def _all_done(futures: list[asyncio.Future[Any]]) -> None:
    """Wait until every future is done, in order: confirms come in order, mostly
    many at once, so this waits a few times where ``asyncio.wait`` would put a
    callback on each future."""
    for future in futures:
        if not future.done():
            await asyncio.wait((future,))


def close_reason(channel: AbstractChannel) -> BaseException | None:
    """Why ``channel`` was closed, once it is (the exception of its closing future)."""
    if not channel.is_closed:
        return None
    closing = channel.closing
    return None if closing.cancelled() else closing.exception()
