"""The consume loop: long-polling receives, within the prefetch window.

Each ``consume()`` call keeps up to ``pollers`` ``ReceiveMessage`` calls in flight,
each asking for at most ten messages and no more than the window has room for: the
free message count, less what is received and not yet handed out, and, once bodies
have been seen, as many as the free bytes would hold at the largest body seen. Until
a body has been seen, a byte bound that ten maximal messages could exceed asks for
one. What a receive brings beyond the byte bound waits, kept invisible, until the
window has room.

A received message is handed out with ``attempt`` = its receive count. On a queue
whose patterns SNS cannot match exactly (see :mod:`.filters`), a message that
decoded and whose type none of the patterns matches is deleted, never handed out.

When the consumer stops (a worker draining), it asks for nothing more; what was
received and not handed out is made visible again at once, in batched
``ChangeMessageVisibilityBatch`` calls (the worker releases what it was handed and has
not started the same way); receives still in flight finish in the background, and
what they bring is made visible again when the last of them is over: given back at
once, a message would be taken again by the next receive still in flight, each
taking counted by SQS as a delivery, until the delivery limit dead-lettered it. So a
message given back at the stop and taken by one of those receives waits for them
(up to the ``wait`` of a long poll) and is counted once more, not once per receive.
Deliveries being handled are settled as usual. A transient queue is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from ...broker import Delivery, Prefetch, Subscription
from ...errors import BrokerError, ErrorTable
from ...topic import matches
from ...window import Window
from .delivery import Held, Lease, Settler, SQSDelivery
from .errors import queue_gone
from .exclusive import Lock
from .filters import exact
from .keeper import Keeper
from .settings import SQSSettings
from .topology import QueueInfo, Topology
from .wire import BASE64, BODY, MAX_SIZE, decode

__all__ = ["QueueConsumer"]

log = logging.getLogger("herald.brokers.sqs")
Received = tuple[dict[str, Any], Held]


class QueueConsumer:
    """Consumes queues for one broker."""

    def __init__(
        self,
        sqs: Any,
        topology: Topology,
        settings: SQSSettings,
        table: ErrorTable,
        settler: Settler,
        keeper: Keeper,
        lock: Lock,
        declare: Callable[[Subscription], Awaitable[QueueInfo]],
    ) -> None:
        self._sqs = sqs
        self._topology = topology
        self._settings = settings
        self._table = table
        self._settler = settler
        self._keeper = keeper
        self._lock = lock
        self._declare = declare
        self.background: set[asyncio.Task[Any]] = set()

    async def consume(
        self, subscription: Subscription, prefetch: Prefetch
    ) -> AsyncGenerator[Delivery, None]:
        info = await self._declare(subscription)
        lease = Lease(subscription, info.url, Window(prefetch))
        state = _Polling(lease, info.patterns)
        try:
            await self._keeper.attach(lease, await self._tags(info.url))
            if subscription.exclusive:
                await self._lock.acquire(lease)
            while True:
                await lease.window.room()
                if not state.ready:
                    self._poll(state)
                    await state.wait()
                    if state.failure is not None:
                        failure, state.failure = state.failure, None
                        if not queue_gone(failure.__cause__):
                            raise failure
                        log.warning("queue %s vanished; declaring it again", subscription.queue)
                        self._topology.forget(lease.url)
                        info = await self._declare(subscription)
                        lease.url = info.url
                        state.patterns, state.exact = info.patterns, exact(info.patterns)
                    elif not state.ready and not self._settings.wait:
                        await asyncio.sleep(0.5)  # short polling found nothing: not a spin
                    continue
                received, held = state.ready.popleft()
                delivery = self._delivery(lease, state, received, held)
                if delivery is not None:
                    yield delivery
        finally:
            await self._stop(lease, state)

    def _delivery(
        self, lease: Lease, state: _Polling, received: dict[str, Any], held: Held
    ) -> SQSDelivery | None:
        message, error = decode(received)
        if (
            error is None
            and not state.exact
            and not any(matches(p, message.type) for p in state.patterns)
        ):
            lease.held.pop(held.receipt, None)
            self._later(self._settler.delete(held))
            return None
        lease.window.take(held.size)
        count = received.get("Attributes", {}).get("ApproximateReceiveCount", "1")
        return SQSDelivery(
            message,
            lease.subscription,
            int(count) if count.isdigit() else 1,
            error=error,
            held=held,
            lease=lease,
            settler=self._settler,
        )

    def _poll(self, state: _Polling) -> None:
        """Start receives while the window has room for what they may bring."""
        lease, window = state.lease, state.lease.window
        while state.polls < self._settings.pollers and not state.failure:
            room = window.free - len(state.ready) - state.asked
            if state.largest:
                room_bytes = window.limit.bytes - window.bytes - state.ready_bytes
                room = min(room, max(1, room_bytes // state.largest))
            elif window.limit.bytes < 10 * MAX_SIZE and (window.used or state.asked):
                room = 0
            elif window.limit.bytes < 10 * MAX_SIZE:
                room = min(room, 1)
            if room <= 0:
                return
            count = min(10, room)
            state.polls += 1
            state.asked += count
            task = asyncio.create_task(self._receive(state, lease.url, count))
            state.tasks.add(task)
            task.add_done_callback(state.tasks.discard)

    async def _receive(self, state: _Polling, url: str, count: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            with self._table.converting(f"receiving from {state.lease.subscription.queue}"):
                reply = await self._sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=count,
                    VisibilityTimeout=self._settings.visibility,
                    WaitTimeSeconds=self._settings.wait,
                    MessageAttributeNames=["All"],
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                )
        except BrokerError as exc:
            state.failure = exc
            reply = {}
        finally:
            state.polls -= 1
            state.asked -= count
        now = loop.time()
        for received in reply.get("Messages") or ():
            size = _size(received)
            held = Held(url, received["ReceiptHandle"], now + self._settings.visibility, now, size)
            state.largest = max(state.largest, size)
            if state.stopped:
                state.leftover.append(held)
                continue
            state.lease.held[held.receipt] = held
            state.ready.append((received, held))
        if state.stopped and not state.polls and state.leftover:
            # once every receive is over (see the module's docstring)
            leftover, state.leftover = state.leftover, []
            self._later(self._give_back(leftover))
        state.arrived.set()

    async def _give_back(self, held: list[Held]) -> None:
        await asyncio.gather(*(self._settler.change(h, 0) for h in held))

    async def _stop(self, lease: Lease, state: _Polling) -> None:
        state.stopped = True
        unsent = [held for _, held in state.ready]
        state.ready.clear()
        for held in unsent:
            lease.held.pop(held.receipt, None)
        for task in state.tasks:
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        if unsent:
            # in the background, so that a second cancellation of a consumer slow to
            # stop does not cut the give-back short (the broker's close waits for it)
            await asyncio.shield(self._later(self._give_back(unsent)))
        await self._keeper.detach(lease)
        if lease.token is not None:
            if lease.window.used:
                lease.on_empty = lambda: self._later_none(self._lock.release(lease))
            else:
                with contextlib.suppress(BrokerError):
                    await self._lock.release(lease)
        if not lease.subscription.durable:
            with contextlib.suppress(BrokerError):
                await self._topology.remove(lease.subscription)

    async def _tags(self, url: str) -> dict[str, str]:
        with contextlib.suppress(Exception):
            return await self._topology.tags(url)
        return {}

    def _later_none(self, work: Awaitable[None]) -> None:
        self._later(work)

    def _later(self, work: Awaitable[None]) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                await work
            except BrokerError as exc:
                log.debug("background settlement failed: %s", exc)

        task = asyncio.create_task(run())
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task


class _Polling:
    """The receives of one consumer: those in flight, and what they brought."""

    def __init__(self, lease: Lease, patterns: tuple[str, ...]) -> None:
        self.lease = lease
        self.patterns = patterns
        self.exact = exact(patterns)
        self.ready: deque[Received] = deque()
        self.tasks: set[asyncio.Task[None]] = set()
        self.arrived = asyncio.Event()
        self.polls = 0
        self.asked = 0
        self.largest = 0
        self.failure: BrokerError | None = None
        self.stopped = False
        self.leftover: list[Held] = []

    @property
    def ready_bytes(self) -> int:
        return sum(held.size for _, held in self.ready)

    async def wait(self) -> None:
        """Until a receive brought messages, or failed, or ended empty."""
        self.arrived.clear()
        if not self.ready and self.failure is None:
            await self.arrived.wait()


def _size(received: dict[str, Any]) -> int:
    body = received.get("MessageAttributes", {}).get(BODY)
    if body is not None:
        if "BinaryValue" in body:
            return len(body["BinaryValue"])
        return len(body.get("StringValue") or "") * 3 // 4 if body.get("DataType") == BASE64 else 0
    return len(str(received.get("Body", "")).encode())
