"""Herald's own durable scheduler, for brokers that cannot hold a message until a time.

A message published with ``at=``/``delay=`` on such a broker is stored, until it is
due, as an envelope in the durable queue ``herald.scheduled`` (see
:mod:`herald.schedule`). Every bus that runs services also runs a :class:`Scheduler`:
a consumer of that queue competing with the schedulers of every other process. An
envelope not yet due goes back to the queue through the broker's own delayed retry
(:meth:`herald.Delivery.retry`: TTL queues on RabbitMQ, a delayed ``nak`` on NATS,
the visibility timeout on SQS, a retry topic on Kafka), as long as the broker lets a
retry wait (``Features.max_retry_delay``), on a step it keeps exactly
(``Features.retry_delay_steps``), so it is never late by more than a hop's
precision. A due envelope's message is published to the exchange, and so reaches
every queue bound *at its due time*, and only then is the envelope acknowledged: a
crash in between publishes it twice, with the same id (an inbox takes it once);
nothing is lost when publishers, schedulers or consumers restart.

An envelope that cannot be read (a malformed due time, no event type) is
dead-lettered with the reason, to ``herald.dlq``.

>>> from herald.broker import Features
>>> amqp_like = Features(max_retry_delay=86_400, retry_delay_steps=(0.01, 0.5, 1.0, 3600.0))
>>> hop(0.7, amqp_like), hop(0.004, amqp_like), hop(90_000, Features()), hop(7200, amqp_like)
(0.5, 0.01, 90000, 3600.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

from .broker import SCHEDULER_SUBSCRIPTION, Broker, Delivery, Features, Prefetch
from .deadletter import DeadLetterReason
from .errors import BrokerError, MessageError
from .headers import ATTEMPT
from .schedule import due_of, unwrap
from .tasks import cancel_and_wait, cancelling

__all__ = ["Scheduler", "hop"]

log = logging.getLogger("herald.scheduler")
RESUBSCRIBE_DELAY = 1.0
REPUBLISH_DELAY = 1.0
"""Seconds before a due envelope whose publish failed is tried again."""


def hop(remaining: float, features: Features) -> float:
    """How long one retry of an envelope due in ``remaining`` seconds waits: as long
    as the broker lets a retry wait, on a step it keeps exactly (the shortest step
    when ``remaining`` is below it)."""
    delay = min(remaining, features.max_retry_delay)
    steps = features.retry_delay_steps
    if steps:
        fitting = [step for step in steps if step <= delay]
        delay = fitting[-1] if fitting else steps[0]
    return delay


class Scheduler:
    """Consumes ``herald.scheduled`` and publishes each message at its due time.

    ``async with Scheduler(broker):`` or :meth:`start` / :meth:`stop`; the bus starts
    one with its first service (:meth:`herald.Bus.start_scheduler`).
    """

    def __init__(self, broker: Broker, *, prefetch: Prefetch | None = None) -> None:
        self.broker = broker
        self.prefetch = prefetch or Prefetch(256)
        self.published = 0
        """Messages this scheduler published at their due time."""
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._settling: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Declare the scheduler queue and start consuming it in the background (once:
        services started at the same time each call this)."""
        async with self._starting:
            if self.running:
                return
            await self.broker.declare(SCHEDULER_SUBSCRIPTION)
            self._task = asyncio.create_task(self._consume(), name="herald:scheduler")

    async def stop(self) -> None:
        """Stop consuming; envelopes being handled finish, the rest stay queued."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

    async def _consume(self) -> None:
        while True:
            stream: AsyncGenerator[Delivery, None] | None = None
            try:
                stream = self.broker.consume(SCHEDULER_SUBSCRIPTION, self.prefetch)
                async for delivery in stream:
                    task = asyncio.create_task(self._handle(delivery))
                    self._settling.add(task)
                    task.add_done_callback(self._settling.discard)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("scheduler: consumer failed: %s; subscribing again", exc)
            finally:
                if stream is not None:
                    with contextlib.suppress(Exception):
                        await stream.aclose()
            if cancelling():  # stopped, but the client turned that into an error
                raise asyncio.CancelledError
            await asyncio.sleep(RESUBSCRIBE_DELAY)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            await self._settle(delivery)
        except BrokerError as exc:  # the broker delivers the envelope again
            log.warning("scheduler: settling %s failed: %s", delivery.message.id, exc)

    async def _settle(self, delivery: Delivery) -> None:
        try:
            if delivery.error is not None:
                raise delivery.error
            message = unwrap(delivery.message).without_headers(ATTEMPT)
            due = due_of(message) or 0.0
        except MessageError as exc:
            await delivery.dead_letter(_reason(delivery, exc))
            return
        remaining = due - time.time()
        if remaining > 0:
            await delivery.retry(hop(remaining, self.broker.features), {})
            return
        try:
            await self.broker.publish([message])
        except BrokerError as exc:
            log.warning("scheduler: publishing %s failed: %s; again soon", message.id, exc)
            await delivery.retry(REPUBLISH_DELAY, {})
            return
        await delivery.ack()
        self.published += 1


def _reason(delivery: Delivery, error: MessageError) -> DeadLetterReason:
    now = datetime.now(UTC)
    return DeadLetterReason(
        SCHEDULER_SUBSCRIPTION.queue,
        type(error).__name__,
        str(error),
        delivery.attempt,
        now,
        now,
    )
