"""The worker: consumes a service's queues and runs its handlers.

Per service, at most ``concurrency`` handlers run at once. Deliveries that share a
key are handled one at a time in the order the broker delivered them (a *lane* per
key); deliveries without a key run independently. Each delivery passes through the
handler chain (:mod:`herald.middleware`), which returns its outcome; the worker then
settles it: ack, retry after a delay, dead-letter, or release. Whatever goes wrong
in between, every delivery is settled or handed back: none holds a prefetch slot.

A keyed delivery that fails holds its key: it is retried in this process after the
policy's delay (its concurrency slot free meanwhile), and the later events of the
key wait until it succeeds or is dead-lettered, while other keys go on. A worker
that stops during such a wait hands the delivery back as an ordinary broker retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Mapping, Sequence

from .broker import Broker, Delivery, Prefetch
from .codec import CodecRegistry
from .context import Context, Publisher
from .errors import BrokerError, HeraldError, SettleError
from .event import Event
from .handler import Handler
from .message import Message
from .middleware import (
    ACK,
    DecodeMiddleware,
    Middleware,
    Next,
    Outcome,
    PublishNext,
    RetryMiddleware,
    TimeoutMiddleware,
    failure,
    handler_chain,
    publish_chain,
    shutting_down,
)
from .service import Service

__all__ = ["BUILTIN_MIDDLEWARE", "Worker"]

log = logging.getLogger("herald.worker")
RESUBSCRIBE_DELAY = (0.2, 0.5, 1.0, 2.0, 5.0)
BUILTIN_MIDDLEWARE: tuple[Middleware, ...] = (
    RetryMiddleware(),
    DecodeMiddleware(),
    TimeoutMiddleware(),
)
"""Innermost, in this order, around every handler."""


class _ServicePublisher:
    """The bus's publishing, with a service's own publish middleware in front."""

    __slots__ = ("_bus", "_send")

    def __init__(self, bus: Publisher, middleware: Sequence[Middleware]) -> None:
        self._bus = bus
        self._send: PublishNext = publish_chain(middleware, bus.send)

    @property
    def codecs(self) -> CodecRegistry:
        return self._bus.codecs

    def message(
        self,
        event: Event | Message,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        return self._bus.message(event, key=key, headers=headers)

    async def send(self, messages: Sequence[Message]) -> None:
        await self._send(messages)

    def accepts_reply_address(self, address: str) -> bool:
        return self._bus.accepts_reply_address(address)

    async def send_reply(self, address: str, reply: Message) -> None:
        await self._bus.send_reply(address, reply)


class Worker:
    """Runs one service's handlers against a bus until stopped."""

    def __init__(
        self,
        broker: Broker,
        publisher: Publisher,
        service: Service,
        *,
        concurrency: int | None = None,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        self._broker = broker
        self.service = service
        self.concurrency = concurrency or service.concurrency
        self._publisher: Publisher = (
            _ServicePublisher(publisher, service.middleware) if service.middleware else publisher
        )
        stack = (*middleware, *service.middleware, *BUILTIN_MIDDLEWARE)
        self._chains: dict[str, Next] = {
            h.subscription.queue: handler_chain(stack, _call_handler) for h in service.handlers
        }
        self._slots = asyncio.Semaphore(self.concurrency)
        self._consumers: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._lanes: dict[tuple[str, str], deque[tuple[Handler, Delivery]]] = {}
        self._stopping = False
        self._stopped = asyncio.Event()
        self.handled = 0
        """Handler runs finished so far, each with its outcome (acked, retried,
        released or dead-lettered; in-process retries of keyed deliveries count too)."""

    @property
    def prefetch(self) -> Prefetch:
        return self.service.prefetch_for(self.concurrency)

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
        self._stopped.set()
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
        chain = self._chains[handler.subscription.queue]
        while not self._stopping:
            stream: AsyncGenerator[Delivery, None] = self._broker.consume(
                handler.subscription, self.prefetch
            )
            try:
                async for delivery in stream:
                    failures = 0
                    self._dispatch(handler, chain, delivery)
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

    def _dispatch(self, handler: Handler, chain: Next, delivery: Delivery) -> None:
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
            self._spawn(self._run_one(handler, chain, delivery))
            return
        lane_id = (handler.subscription.queue, key)
        lane = self._lanes.get(lane_id)
        if lane is not None:
            lane.append((handler, delivery))
            return
        self._lanes[lane_id] = deque([(handler, delivery)])
        self._spawn(self._run_lane(lane_id, chain))

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_lane(self, lane_id: tuple[str, str], chain: Next) -> None:
        lane = self._lanes[lane_id]
        try:
            while lane:
                handler, delivery = lane.popleft()
                await self._run_one(handler, chain, delivery)
        finally:
            if self._lanes.get(lane_id) is lane:
                del self._lanes[lane_id]
            while lane:
                await _quietly_release(lane.popleft()[1])

    async def _run_one(self, handler: Handler, chain: Next, delivery: Delivery) -> None:
        message, attempt = delivery.message, delivery.attempt
        while True:
            async with self._slots:
                if self._stopping:
                    await _quietly_release(delivery)
                    return
                started = time.perf_counter()
                ctx = Context(
                    self._publisher, delivery, handler, self.service.name,
                    message=message, attempt=attempt,
                )  # fmt: skip
                try:
                    outcome = await chain(ctx)
                except asyncio.CancelledError as exc:
                    if shutting_down():
                        await _quietly_release(delivery)
                        raise
                    outcome = failure(ctx, exc)
                except Exception as exc:  # a middleware outside the retry policy failed
                    outcome = failure(ctx, exc)
                elapsed = time.perf_counter() - started
                if not (outcome.settlement == "retry" and message.subject is not None):
                    await self._settle(ctx, outcome, elapsed)
                    return
            self.handled += 1
            _log_outcome(ctx, outcome, elapsed)
            if not await self._hold(outcome.delay):
                await self._settle(ctx, outcome, elapsed, logged=True, counted=True)
                return
            message, attempt = message.with_headers(outcome.headers), attempt + 1

    async def _hold(self, delay: float) -> bool:
        """Wait out a retry delay; False if the worker began stopping meanwhile."""
        try:
            async with asyncio.timeout(delay):
                await self._stopped.wait()
        except TimeoutError:
            return True
        return False

    async def _settle(
        self,
        ctx: Context,
        outcome: Outcome,
        elapsed: float,
        *,
        logged: bool = False,
        counted: bool = False,
    ) -> None:
        delivery, handler = ctx.delivery, ctx.handler
        try:
            if outcome is ACK or outcome.settlement == "ack":
                await delivery.ack()
            elif outcome.settlement == "retry":
                await delivery.retry(outcome.delay, outcome.headers)
            elif outcome.settlement == "dead_letter":
                assert outcome.reason is not None
                await delivery.dead_letter(outcome.reason)
            else:
                await delivery.release()
        except SettleError as exc:
            log.error("%s (a middleware settled it itself?)", exc)
        except HeraldError as exc:
            log.warning(
                "could not settle %s on %s: %s; it will be redelivered",
                delivery.message.id,
                handler.subscription.queue,
                exc,
            )
        except Exception:
            log.exception(
                "settling %s on %s failed; it will be redelivered",
                delivery.message.id,
                handler.subscription.queue,
            )
        finally:
            if not counted:
                self.handled += 1
        if not logged:
            _log_outcome(ctx, outcome, elapsed)

    async def _release_queued(self) -> None:
        lanes = list(self._lanes.values())
        self._lanes.clear()
        for lane in lanes:
            while lane:
                await _quietly_release(lane.popleft()[1])


async def _call_handler(ctx: Context) -> Outcome:
    handler = ctx.handler
    if log.isEnabledFor(logging.INFO):
        message = ctx.message
        log.info(
            "started %s %s in %s",
            message.type,
            message.id,
            handler.name,
            extra=_fields(handler, ctx.delivery, event="started"),
        )
    if handler.wants_context:
        await handler.func(ctx.payload, ctx)
    else:
        await handler.func(ctx.payload)
    return ACK


def _log_outcome(ctx: Context, outcome: Outcome, elapsed: float) -> None:
    delivery, handler, message = ctx.delivery, ctx.handler, ctx.message
    millis = elapsed * 1000
    if outcome.settlement == "ack":
        log.info(
            "finished %s %s in %s (%.1f ms)",
            message.type,
            message.id,
            handler.name,
            millis,
            extra=_fields(
                handler, delivery, event="finished", duration_ms=millis, attempt=ctx.attempt
            ),
        )
    elif outcome.settlement == "retry":
        error = outcome.error
        log.warning(
            "failed %s %s in %s (attempt %d/%d, %.1f ms): %s: %s; retrying in %.2fs",
            message.type,
            message.id,
            handler.name,
            ctx.attempt,
            handler.retry.attempts,
            millis,
            type(error).__name__,
            error,
            outcome.delay,
            extra=_fields(
                handler, delivery, event="failed", duration_ms=millis, attempt=ctx.attempt
            ),
        )
    elif outcome.settlement == "dead_letter":
        error = outcome.error
        log.error(
            "dead-lettered %s %s from %s to %s: %s",
            message.type,
            message.id,
            delivery.subscription.queue,
            delivery.subscription.dead_letter_queue,
            outcome.reason,
            exc_info=error if isinstance(error, Exception) and not _expected(error) else None,
            extra=_fields(handler, delivery, event="dead-lettered", attempt=ctx.attempt),
        )
    else:
        log.info(
            "released %s %s on %s",
            message.type,
            message.id,
            delivery.subscription.queue,
            extra=_fields(handler, delivery, event="released", attempt=ctx.attempt),
        )


def _expected(error: BaseException) -> bool:
    """Errors whose reason says it all (no traceback in the log)."""
    return isinstance(error, HeraldError)


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
    if delivery.settlement is not None:
        return
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
