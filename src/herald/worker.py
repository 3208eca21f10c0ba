"""The worker: consumes a service's queues and runs its handlers.

Per service, at most ``concurrency`` handlers run at once. Deliveries that share a
key are handled one at a time in the order the broker delivered them (a *lane* per
key); deliveries without a key run independently. Each delivery passes through the
handler chain (:mod:`herald.middleware`), which returns its outcome; the worker then
settles it: ack, retry after a delay, dead-letter, or release. Whatever goes wrong
in between, every delivery is settled or handed back: none holds a prefetch slot.

A runner does not wait for an ack of a keyless delivery to be confirmed: an ack that
must wait for the broker goes on in the background (the adapter batches what settles
together: one round trip for a whole read on Redis) and the runner takes the next job;
at most a prefetch window of acks is in flight so, beyond that, runners wait for theirs.
At-least-once is unchanged: an ack that never arrives leaves the delivery to be
redelivered. Keyed deliveries wait for their settlement, so the next event of the key
starts only once it is done, and :meth:`Worker.stop` waits for the acks in flight.

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
from dataclasses import dataclass

from .backfill import declare_queues
from .broker import Broker, Delivery, Prefetch
from .capabilities import ConsumerStatus
from .codec import CodecRegistry
from .context import Context, Publisher
from .errors import BrokerError, HeraldError, SettleError
from .event import Event
from .handler import Handler
from .journal import LOG_FIELDS, fields, log, log_outcome, log_started
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
    handling,
    publish_chain,
    shutting_down,
)
from .parking import Parking
from .recurrence import Ticker
from .service import Service

__all__ = ["BUILTIN_MIDDLEWARE", "LOG_FIELDS", "Worker"]

RESUBSCRIBE_DELAY = (0.2, 0.5, 1.0, 2.0, 5.0)
BUILTIN_MIDDLEWARE: tuple[Middleware, ...] = (
    RetryMiddleware(),
    DecodeMiddleware(),
    TimeoutMiddleware(),
)
"""Innermost, in this order, around every handler (the timeout only around handlers
that have one); the worker runs them fused into one coroutine
(:func:`herald.middleware.handling`)."""


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


@dataclass(slots=True, eq=False)
class _Job:
    """A delivery on its way through the worker (an in-process retry updates it)."""

    handler: Handler
    chain: Next
    delivery: Delivery
    message: Message
    attempt: int
    lane: tuple[str, str] | None = None


class Worker:
    """Runs one service's handlers against a bus until stopped.

    ``concurrency`` runner tasks take jobs from one ready queue; a keyed delivery
    whose key is busy waits in that key's lane and joins the ready queue when the
    one before it is settled.
    """

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
        chain = handler_chain((*middleware, *service.middleware), handling(log_started))
        self._chains: dict[str, Next] = {h.subscription.queue: chain for h in service.handlers}
        self._consumers: list[asyncio.Task[None]] = []
        self._runners: list[asyncio.Task[None]] = []
        self._ready: deque[_Job] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()
        self._lanes: dict[tuple[str, str], deque[_Job]] = {}
        self._held: dict[_Job, tuple[asyncio.TimerHandle, Outcome]] = {}
        self._acking = Parking()
        self._max_acking = self.prefetch.messages
        self._running = 0
        self._drained = asyncio.Event()
        self._stopping = False
        self._stopped = False
        self._subscribed: set[str] = set()
        self._ticker = Ticker(service.recurrences, self._publisher)
        self.handled = 0
        """Handler runs finished so far, each with its outcome (acked, retried,
        released or dead-lettered; in-process retries of keyed deliveries count too)."""

    @property
    def prefetch(self) -> Prefetch:
        return self.service.prefetch_for(self.concurrency)

    async def start(self) -> None:
        """Declare every queue (backfilling those that ask), then start consuming them."""
        await declare_queues(self._broker, self.service.name, self.service.handlers)
        self._runners = [
            asyncio.create_task(self._runner(), name=f"herald:{self.service.name}:runner{i}")
            for i in range(self.concurrency)
        ]
        for handler in self.service.handlers:
            task = asyncio.create_task(
                self._consume(handler), name=f"herald:{handler.subscription.queue}"
            )
            self._consumers.append(task)
        self._ticker.start()
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
        started = time.monotonic()
        log.info(
            "service %s draining: not ready, taking no new deliveries; "
            "%d handler(s) running get up to %.1fs to finish",
            self.service.name,
            self._running,
            timeout,
        )
        try:
            await self._ticker.stop()
            await _cancel_until_done(self._consumers)
            await self._give_back_waiting()
            await self._wait_drained(timeout - (time.monotonic() - started))
            for runner in self._runners:
                runner.cancel()
            await asyncio.gather(*self._runners, return_exceptions=True)
            await self._give_back_waiting()
            await self._acking.wait(max(timeout - (time.monotonic() - started), 1.0))
        finally:
            self._stopped = True
        log.info(
            "service %s stopped (drained in %.2fs)", self.service.name, time.monotonic() - started
        )

    async def _wait_drained(self, timeout: float) -> None:
        if not self._running:
            return
        self._drained.clear()
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await self._drained.wait()
        except TimeoutError:
            log.warning(
                "service %s: %d handler(s) still running at the shutdown deadline; cancelling "
                "them, their deliveries will be redelivered",
                self.service.name,
                self._running,
            )

    @property
    def draining(self) -> bool:
        """Stopping, not yet stopped: running handlers finish, no new deliveries are taken."""
        return self._stopping and not self._stopped

    def consumers(self) -> dict[str, bool]:
        """Each queue of the service, and whether its consumer is running: subscribed,
        not waiting to subscribe again after a failure, not stopped, and, on a broker
        that tells (:class:`herald.capabilities.ConsumerStatus`), taking deliveries."""
        status = self._broker if isinstance(self._broker, ConsumerStatus) else None
        return {
            queue: queue in self._subscribed
            and not self._stopping
            and (status is None or status.consuming(queue))
            for queue in (h.subscription.queue for h in self.service.handlers)
        }

    async def wait(self) -> None:
        """Return when a consumer failed for good (raises its error) — normally never."""
        if self._consumers:
            await asyncio.gather(*self._consumers)

    async def _consume(self, handler: Handler) -> None:
        failures = 0
        queue = handler.subscription.queue
        chain = self._chains[queue]
        while not self._stopping:
            stream: AsyncGenerator[Delivery, None] | None = None
            try:
                stream = self._broker.consume(handler.subscription, self.prefetch)
                self._subscribed.add(queue)
                async for delivery in stream:
                    failures = 0
                    self._dispatch(handler, chain, delivery)
                if self._stopping:
                    return
                log.warning(
                    "queue %s: consumer ended; subscribing again", handler.subscription.queue
                )
            except Exception as exc:
                self._subscribed.discard(queue)
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
                self._subscribed.discard(queue)
                if stream is not None:
                    with contextlib.suppress(Exception):
                        await stream.aclose()

    def _dispatch(self, handler: Handler, chain: Next, delivery: Delivery) -> None:
        message = delivery.message
        if log.isEnabledFor(logging.INFO):
            log.info(
                "received %s %s on %s (attempt %d)",
                message.type,
                message.id,
                handler.subscription.queue,
                delivery.attempt,
                extra=fields(handler, delivery, event="received"),
            )
        job = _Job(handler, chain, delivery, message, delivery.attempt)
        key = message.subject
        if key is not None:
            lane_id = (handler.subscription.queue, key)
            lane = self._lanes.get(lane_id)
            if lane is not None:
                lane.append(job)
                return
            self._lanes[lane_id] = deque()
            job.lane = lane_id
        self._enqueue(job)

    def _enqueue(self, job: _Job) -> None:
        self._ready.append(job)
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _runner(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._ready:
                waiter = loop.create_future()
                self._idle.append(waiter)
                await waiter
                continue
            job = self._ready.popleft()
            self._running += 1
            try:
                await self._run(job)
            finally:
                self._running -= 1
                if self._stopping and not self._running:
                    self._drained.set()

    async def _run(self, job: _Job) -> None:
        delivery = job.delivery
        if self._stopping:
            await _quietly_release(delivery)
            await self._after(job)
            return
        started = time.perf_counter()
        ctx = Context(
            self._publisher,
            delivery,
            job.handler,
            self.service.name,
            message=job.message,
            attempt=job.attempt,
        )
        try:
            outcome = await job.chain(ctx)
        except asyncio.CancelledError as exc:
            if shutting_down():
                await _quietly_release(delivery)
                raise
            outcome = failure(ctx, exc)
        except Exception as exc:  # a middleware outside the retry policy failed
            outcome = failure(ctx, exc)
        elapsed = time.perf_counter() - started
        if (
            job.lane is None
            and (outcome is ACK or outcome.settlement == "ack")
            and self._acking.count < self._max_acking
        ):
            # Ack now, as far as that goes without waiting; the rest is parked on what
            # it waits for (herald.parking), and the runner goes on.
            self._acking.start(self._settle(ctx, outcome, elapsed))
            return
        if outcome.settlement == "retry" and job.lane is not None and not self._stopping:
            self._hold(job, ctx, outcome, elapsed)
            return
        await self._settle(ctx, outcome, elapsed)
        await self._after(job)

    def _hold(self, job: _Job, ctx: Context, outcome: Outcome, elapsed: float) -> None:
        """Retry a keyed delivery in this process after the delay, its key held."""
        self.handled += 1
        log_outcome(ctx, outcome, elapsed)

        def resume() -> None:
            del self._held[job]
            job.message = job.message.with_headers(outcome.headers)
            job.attempt += 1
            self._enqueue(job)

        timer = asyncio.get_running_loop().call_later(outcome.delay, resume)
        self._held[job] = (timer, outcome)

    async def _after(self, job: _Job) -> None:
        """The job's delivery is settled: the next of its key may go."""
        if job.lane is None:
            return
        lane = self._lanes.get(job.lane)
        if lane is None:
            return
        if lane and not self._stopping:
            following = lane.popleft()
            following.lane = job.lane
            self._enqueue(following)
            return
        del self._lanes[job.lane]
        waiting = [job.delivery for job in lane]
        lane.clear()
        await _release_all(waiting)

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
        if not logged and (outcome is not ACK or log.isEnabledFor(logging.INFO)):
            log_outcome(ctx, outcome, elapsed)

    async def _give_back_waiting(self) -> None:
        """Release what no handler has started, all at once (an adapter batches the
        releases, e.g. one SQS call per ten), in the order it came; hand held retries
        to the broker."""
        waiting = [job.delivery for job in self._ready]
        self._ready.clear()
        for lane in self._lanes.values():
            waiting += [job.delivery for job in lane]
            lane.clear()
        self._lanes.clear()
        await _release_all(waiting)
        held, self._held = self._held, {}
        for job, (timer, outcome) in held.items():
            timer.cancel()
            ctx = Context(
                self._publisher, job.delivery, job.handler, self.service.name,
                message=job.message, attempt=job.attempt,
            )  # fmt: skip
            await self._settle(ctx, outcome, 0.0, logged=True, counted=True)


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


async def _release_all(deliveries: Sequence[Delivery]) -> None:
    """Release ``deliveries`` together: each release starts in this order, and those
    that wait for the broker wait at once."""
    if deliveries:
        await asyncio.gather(*(_quietly_release(delivery) for delivery in deliveries))


async def _quietly_release(delivery: Delivery) -> None:
    if delivery.settlement is not None:
        return
    try:
        await delivery.release()
    except Exception as exc:  # the broker redelivers unsettled messages anyway
        log.debug("release of %s failed: %s", delivery.message.id, exc)
