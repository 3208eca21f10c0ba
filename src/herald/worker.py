"""The worker: consumes a service's queues and runs its handlers.

Per service, at most ``concurrency`` handlers run at once. Deliveries that share a
key are handled one at a time in the order the broker delivered them (a *lane* per
key); deliveries without a key run independently. A delivery is acked only after its
handler returned; a failure is retried with backoff and finally dead-lettered with
the reason; an undecodable or invalid message is dead-lettered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .broker import Broker, Delivery
from .context import Context
from .deadletter import FIRST_FAILURE, LAST_ERROR, DeadLetterReason
from .errors import BrokerError, MessageError, Reject
from .message import parse_time
from .service import Handler, Service

if TYPE_CHECKING:
    from .bus import Bus

__all__ = ["Worker"]

log = logging.getLogger("herald.worker")
RESUBSCRIBE_DELAY = (0.2, 0.5, 1.0, 2.0, 5.0)


class Worker:
    """Runs one service's handlers against a bus until stopped."""

    def __init__(self, bus: Bus, service: Service, *, concurrency: int | None = None) -> None:
        self._bus = bus
        self._broker: Broker = bus.broker
        self.service = service
        self.concurrency = concurrency or service.concurrency
        self._slots = asyncio.Semaphore(self.concurrency)
        self._consumers: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._lanes: dict[tuple[str, str], deque[tuple[Handler, Delivery]]] = {}
        self._stopping = False
        self.handled = 0
        """Deliveries settled so far (acked, retried or dead-lettered)."""

    @property
    def prefetch(self) -> int:
        return self.service.prefetch or max(self.concurrency * 4, 32)

    async def start(self) -> None:
        """Declare every queue, then start consuming them."""
        for handler in self.service.handlers:
            await self._broker.declare(handler.subscription)
        for handler in self.service.handlers:
            task = asyncio.create_task(
                self._consume(handler), name=f"herald:{handler.subscription.queue}"
            )
            self._consumers.append(task)
        log.info(
            "service %s consuming %s (concurrency %d)",
            self.service.name,
            ", ".join(h.subscription.queue for h in self.service.handlers),
            self.concurrency,
        )

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop taking deliveries, let running handlers finish within ``timeout``
        seconds, and give everything else back to the broker for redelivery."""
        if self._stopping:
            return
        self._stopping = True
        await _cancel_until_done(self._consumers)
        await self._release_queued()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            if pending:
                log.warning(
                    "service %s: %d handler(s) still running after %.1fs; cancelling them, "
                    "their deliveries will be redelivered",
                    self.service.name,
                    len(pending),
                    timeout,
                )
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        await self._release_queued()
        log.info("service %s stopped", self.service.name)

    async def wait(self) -> None:
        """Return when a consumer failed for good (raises its error) — normally never."""
        if self._consumers:
            await asyncio.gather(*self._consumers)

    async def _consume(self, handler: Handler) -> None:
        failures = 0
        while not self._stopping:
            stream: AsyncGenerator[Delivery, None] = self._broker.consume(
                handler.subscription, self.prefetch
            )
            try:
                async for delivery in stream:
                    failures = 0
                    self._dispatch(handler, delivery)
                if self._stopping:
                    return
                log.warning(
                    "queue %s: consumer ended; subscribing again", handler.subscription.queue
                )
            except Exception as exc:
                delay = RESUBSCRIBE_DELAY[min(failures, len(RESUBSCRIBE_DELAY) - 1)]
                failures += 1
                log.log(
                    logging.WARNING if isinstance(exc, BrokerError) else logging.ERROR,
                    "queue %s: consumer failed: %s; subscribing again in %.1fs",
                    handler.subscription.queue,
                    exc,
                    delay,
                    exc_info=None if isinstance(exc, BrokerError) else exc,
                )
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()

    def _dispatch(self, handler: Handler, delivery: Delivery) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(
                "received %s %s on %s (attempt %d)",
                delivery.message.type,
                delivery.message.id,
                handler.subscription.queue,
                delivery.attempt,
                extra=_fields(handler, delivery, event="received"),
            )
        key = delivery.message.subject
        if key is None:
            self._spawn(self._run_one(handler, delivery))
            return
        lane_id = (handler.subscription.queue, key)
        lane = self._lanes.get(lane_id)
        if lane is not None:
            lane.append((handler, delivery))
            return
        self._lanes[lane_id] = deque([(handler, delivery)])
        self._spawn(self._run_lane(lane_id))

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_lane(self, lane_id: tuple[str, str]) -> None:
        lane = self._lanes[lane_id]
        try:
            while lane:
                handler, delivery = lane.popleft()
                await self._run_one(handler, delivery)
        finally:
            if self._lanes.get(lane_id) is lane:
                del self._lanes[lane_id]
            while lane:
                await _quietly_release(lane.popleft()[1])

    async def _run_one(self, handler: Handler, delivery: Delivery) -> None:
        async with self._slots:
            if self._stopping:
                await _quietly_release(delivery)
                return
            try:
                await self._handle(handler, delivery)
            except asyncio.CancelledError:
                await _quietly_release(delivery)
                raise
            except BrokerError as exc:
                log.warning(
                    "could not settle %s on %s: %s; it will be redelivered",
                    delivery.message.id,
                    handler.subscription.queue,
                    exc,
                )
            finally:
                self.handled += 1

    async def _handle(self, handler: Handler, delivery: Delivery) -> None:
        message = delivery.message
        started = time.perf_counter()
        if delivery.attempt > handler.retry.attempts:
            await self._dead_letter(
                handler,
                delivery,
                "DeliveryLimitExceeded",
                f"delivered {delivery.attempt} times without being settled "
                f"(limit {handler.retry.attempts}); "
                "the consumer may have crashed while handling it",
            )
            return
        try:
            payload = (
                self._bus.codecs.decode(message.body, message.datacontenttype, handler.event_class)
                if handler.event_class is not None
                else message
            )
        except MessageError as exc:
            await self._dead_letter(handler, delivery, type(exc).__name__, str(exc))
            return
        if log.isEnabledFor(logging.INFO):
            log.info(
                "started %s %s in %s",
                message.type,
                message.id,
                handler.name,
                extra=_fields(handler, delivery, event="started"),
            )
        ctx = Context(
            self._bus, message, delivery.attempt, self.service.name, delivery.subscription.queue
        )
        try:
            call = handler.func(payload, ctx) if handler.wants_context else handler.func(payload)
            if handler.timeout is None:
                await call
            else:
                async with asyncio.timeout(handler.timeout):
                    await call
        except Reject as exc:
            await self._dead_letter(handler, delivery, "Reject", str(exc) or "rejected by handler")
            return
        except MessageError as exc:  # e.g. ctx.decode(): retrying cannot fix the bytes
            await self._dead_letter(handler, delivery, type(exc).__name__, str(exc))
            return
        except Exception as exc:
            await self._failed(handler, delivery, exc, time.perf_counter() - started)
            return
        await delivery.ack()
        if log.isEnabledFor(logging.INFO):
            elapsed = time.perf_counter() - started
            log.info(
                "finished %s %s in %s (%.1f ms)",
                message.type,
                message.id,
                handler.name,
                elapsed * 1000,
                extra=_fields(handler, delivery, event="finished", duration_ms=elapsed * 1000),
            )

    async def _failed(
        self, handler: Handler, delivery: Delivery, exc: BaseException, elapsed: float
    ) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if delivery.attempt >= handler.retry.attempts:
            await self._dead_letter(handler, delivery, type(exc).__name__, str(exc), exc_info=exc)
            return
        delay = handler.retry.delay(delivery.attempt)
        log.warning(
            "failed %s %s in %s (attempt %d/%d, %.1f ms): %s; retrying in %.2fs",
            delivery.message.type,
            delivery.message.id,
            handler.name,
            delivery.attempt,
            handler.retry.attempts,
            elapsed * 1000,
            error,
            delay,
            extra=_fields(handler, delivery, event="failed", duration_ms=elapsed * 1000),
        )
        first = delivery.message.headers.get(FIRST_FAILURE) or datetime.now(UTC).isoformat()
        await delivery.retry(delay, {FIRST_FAILURE: first, LAST_ERROR: error[:1000]})

    async def _dead_letter(
        self,
        handler: Handler,
        delivery: Delivery,
        error_type: str,
        error: str,
        exc_info: BaseException | None = None,
    ) -> None:
        first = delivery.message.headers.get(FIRST_FAILURE)
        reason = DeadLetterReason(
            queue=delivery.subscription.queue,
            error_type=error_type,
            error_message=error,
            attempts=delivery.attempt,
            first_failure=parse_time(first) if first else None,
            last_failure=datetime.now(UTC),
        )
        log.error(
            "dead-lettered %s %s from %s to %s: %s",
            delivery.message.type,
            delivery.message.id,
            delivery.subscription.queue,
            delivery.subscription.dead_letter_queue,
            reason,
            exc_info=exc_info,
            extra=_fields(handler, delivery, event="dead-lettered"),
        )
        await delivery.dead_letter(reason)

    async def _release_queued(self) -> None:
        lanes = list(self._lanes.values())
        self._lanes.clear()
        for lane in lanes:
            while lane:
                await _quietly_release(lane.popleft()[1])


async def _cancel_until_done(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again any that carried on: some
    drivers swallow a cancellation that lands while they are mid-command."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
        if pending:
            log.warning("%d consumer(s) ignored cancellation; cancelling again", len(pending))


async def _quietly_release(delivery: Delivery) -> None:
    try:
        await delivery.release()
    except Exception as exc:  # the broker redelivers unsettled messages anyway
        log.debug("release of %s failed: %s", delivery.message.id, exc)


def _fields(handler: Handler, delivery: Delivery, **more: object) -> dict[str, object]:
    return {
        "herald": {
            "message_id": delivery.message.id,
            "type": delivery.message.type,
            "queue": delivery.subscription.queue,
            "handler": handler.name,
            "attempt": delivery.attempt,
            **more,
        }
    }
