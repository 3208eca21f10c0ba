"""``memory://[name]`` — an in-process broker for tests and single-process apps.

Queues live as long as the process: a service that stops and starts again in the
same process catches up on what it missed. Brokers built from the same URL share
their queues, so a test's publisher and its services may connect separately.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from ..broker import Broker, Delivery, Features, ProgressCallback, Subscription
from ..deadletter import DeadLetter, DeadLetterReason
from ..errors import BrokerError
from ..message import Message
from ..topic import matches
from ..url import BrokerURL

__all__ = ["MemoryBroker"]


@dataclass(slots=True, eq=False)
class _Entry:
    message: Message
    deliveries: int = 0


@dataclass(slots=True)
class _Queue:
    subscription: Subscription
    ready: deque[_Entry] = field(default_factory=deque)
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    unsettled: set[_Entry] = field(default_factory=set)

    def put(self, entry: _Entry, *, front: bool = False) -> None:
        if front:
            self.ready.appendleft(entry)
        else:
            self.ready.append(entry)
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def get(self) -> _Entry:
        while not self.ready:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and self.ready:
                    self.put(self.ready.popleft(), front=True)
                raise
        return self.ready.popleft()


@dataclass(slots=True)
class _Hub:
    queues: dict[str, _Queue] = field(default_factory=dict)
    dead: dict[str, list[Message]] = field(default_factory=dict)


_HUBS: dict[str, _Hub] = {}


class MemoryBroker(Broker):
    """Everything in this process's memory; shared by name within the process."""

    scheme = "memory"
    features = Features(persistent=False, multi_process=False, restartable=False)

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._hub = _HUBS.setdefault(name, _Hub())
        self._timers: set[asyncio.TimerHandle] = set()
        self._closed = False

    @classmethod
    def from_url(cls, url: BrokerURL) -> MemoryBroker:
        url.reject_unknown(set())
        name = ",".join(host for host, _ in url.hosts) + url.path
        return cls(name)

    @classmethod
    def reset(cls, name: str = "") -> None:
        """Forget every queue and dead letter of the named in-process broker."""
        _HUBS.pop(name, None)

    async def connect(self) -> None:
        self._closed = False

    async def destroy(self) -> None:
        self._hub.queues.clear()
        self._hub.dead.clear()

    async def close(self) -> None:
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    async def publish(self, messages: Sequence[Message]) -> None:
        self._check_open()
        for message in messages:
            for queue in self._hub.queues.values():
                if any(matches(p, message.type) for p in queue.subscription.patterns):
                    queue.put(_Entry(message))

    async def declare(self, subscription: Subscription) -> None:
        self._check_open()
        queue = self._hub.queues.get(subscription.queue)
        if queue is None:
            self._hub.queues[subscription.queue] = _Queue(subscription)
        elif set(queue.subscription.patterns) != set(subscription.patterns):
            merged = tuple(dict.fromkeys(queue.subscription.patterns + subscription.patterns))
            queue.subscription = Subscription(
                subscription.service, subscription.name, merged, subscription.durable
            )

    async def consume(
        self, subscription: Subscription, prefetch: int
    ) -> AsyncGenerator[Delivery, None]:
        await self.declare(subscription)
        queue = self._hub.queues[subscription.queue]
        window = asyncio.Semaphore(prefetch)
        try:
            while True:
                await window.acquire()
                self._check_open()
                entry = await queue.get()
                entry.deliveries += 1
                queue.unsettled.add(entry)
                yield _MemoryDelivery(self, queue, entry, subscription, window.release)
        finally:
            if not subscription.durable:
                self._hub.queues.pop(subscription.queue, None)

    def _later(self, delay: float, queue: _Queue, entry: _Entry) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(timer)
            queue.put(entry)

        timer = loop.call_later(delay, fire)
        self._timers.add(timer)

    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        stored = self._hub.dead.get(service, [])
        return [DeadLetter.from_stored(m) for m in stored[:limit]]

    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        stored = self._hub.dead.get(service, [])
        chosen = [m for m in stored if ids is None or m.id in ids]
        for done, message in enumerate(chosen, 1):
            letter = DeadLetter.from_stored(message)
            queue = self._hub.queues.get(letter.reason.queue)
            if queue is None:
                raise BrokerError(f"queue {letter.reason.queue!r} no longer exists; cannot replay")
            queue.put(_Entry(letter.for_replay()))
            stored.remove(message)
            if progress:
                progress(done, len(chosen))
        return len(chosen)

    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        stored = self._hub.dead.get(service, [])
        keep = [m for m in stored if ids is not None and m.id not in ids]
        self._hub.dead[service] = keep
        return len(stored) - len(keep)

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerError(f"memory://{self.name} broker is closed")


class _MemoryDelivery(Delivery):
    __slots__ = ("_broker", "_done", "_entry", "_queue", "_settled")

    def __init__(
        self,
        broker: MemoryBroker,
        queue: _Queue,
        entry: _Entry,
        subscription: Subscription,
        done: Callable[[], None],
    ) -> None:
        super().__init__(entry.message, subscription, entry.deliveries)
        self._broker = broker
        self._queue = queue
        self._entry = entry
        self._done = done
        self._settled = False

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        self._queue.unsettled.discard(self._entry)
        self._done()
        return True

    async def ack(self) -> None:
        self._settle()

    async def retry(self, delay: float, headers: Mapping[str, str]) -> None:
        if self._settle():
            self._entry.message = self._entry.message.with_headers(headers)
            self._broker._later(delay, self._queue, self._entry)

    async def release(self) -> None:
        if self._settle():
            self._entry.deliveries -= 1
            self._queue.put(self._entry, front=True)

    async def dead_letter(self, reason: DeadLetterReason) -> None:
        if self._settle():
            stored = DeadLetter(self._entry.message, reason).to_stored()
            self._broker._hub.dead.setdefault(self.subscription.service, []).append(stored)
