"""``memory://[name]`` — an in-process broker for tests and single-process apps.

Queues live as long as the process: a service that stops and starts again in the
same process catches up on what it missed. Brokers built from the same URL share
their queues, so a test's publisher and its services may connect separately.
``memory://name?fresh=true`` starts from an empty broker of that name;
``dlq_retention=SECONDS`` (default 1,209,600: 14 days; 0 keeps them for ever) is how
long dead letters are kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Self

from ...broker import Broker, Delivery, Features, Prefetch, ProgressCallback, Subscription
from ...capabilities import QueueStats
from ...deadletter import DeadLetter
from ...errors import BrokerError
from ...message import Message
from ...schedule import due_of
from ...topic import matches
from ...url import BrokerURL
from ...window import Window
from .delivery import MemoryDelivery
from .store import Entry, Queue, hub

__all__ = ["MemoryBroker"]


class MemoryBroker(Broker):
    """Everything in this process's memory; shared by name within the process.

    Implements :class:`herald.DeadLetterAdmin` and :class:`herald.QueueInspection`.
    """

    schemes = ("memory",)
    features = Features(persistent=False, multi_process=False, native_schedule=True)

    def __init__(
        self, name: str = "", *, fresh: bool = False, dlq_retention: float = 1_209_600.0
    ) -> None:
        self.name = name
        self.dlq_retention = dlq_retention
        self._hub = hub(name, fresh=fresh)
        self._timers: set[asyncio.TimerHandle] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryBroker({self.name!r})"

    @classmethod
    def from_url(cls, url: str) -> Self:
        parsed = BrokerURL.parse(url)
        parsed.reject_unknown({"fresh", "dlq_retention"})
        name = ",".join(host for host, _ in parsed.hosts) + parsed.path
        return cls(
            name,
            fresh=parsed.bool_option("fresh", False),
            dlq_retention=parsed.float_option("dlq_retention", 1_209_600.0),
        )

    @classmethod
    def reset(cls, name: str = "") -> None:
        """Forget every queue and dead letter of the named in-process broker."""
        hub(name, fresh=True)

    async def connect(self) -> None:
        self._closed = False

    async def destroy(self) -> None:
        for timer in self._hub.scheduled:
            timer.cancel()
        self._hub.scheduled.clear()
        self._hub.queues.clear()
        self._hub.dead.clear()

    async def close(self) -> None:
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    async def _publish(self, messages: Sequence[Message]) -> None:
        self._check_open()
        self._route(messages)

    def _route(self, messages: Sequence[Message]) -> None:
        queues = self._hub.queues.values()
        bound: dict[str, list[Queue]] = {}  # by event type, for this batch
        for message in messages:
            targets = bound.get(message.type)
            if targets is None:
                targets = bound[message.type] = [
                    queue
                    for queue in queues
                    if any(matches(p, message.type) for p in queue.subscription.patterns)
                ]
            for queue in targets:
                queue.put(Entry(message))

    async def _publish_later(self, messages: Sequence[Message]) -> None:
        """Each message is routed at its due time, to the queues bound then; the timer
        belongs to the hub, so closing this broker object does not cancel it."""
        self._check_open()
        loop = asyncio.get_running_loop()
        for message in messages:
            due = due_of(message) or 0.0
            self._at(loop, max(0.0, due - time.time()), message)

    def _at(self, loop: asyncio.AbstractEventLoop, delay: float, message: Message) -> None:
        scheduled = self._hub.scheduled

        def fire() -> None:
            scheduled.discard(timer)
            self._route((message,))

        timer = loop.call_later(delay, fire)
        scheduled.add(timer)

    async def declare(self, subscription: Subscription) -> None:
        self._check_open()
        queue = self._hub.queues.get(subscription.queue)
        if queue is None:
            self._hub.queues[subscription.queue] = Queue(subscription)
        elif set(queue.subscription.patterns) != set(subscription.patterns):
            merged = tuple(dict.fromkeys(queue.subscription.patterns + subscription.patterns))
            queue.subscription = Subscription(
                subscription.service, subscription.name, merged, subscription.durable
            )

    async def consume(
        self, subscription: Subscription, prefetch: Prefetch
    ) -> AsyncGenerator[Delivery, None]:
        await self.declare(subscription)
        queue = self._hub.queues[subscription.queue]
        window = Window(prefetch)
        me = object()
        closed = False

        def settled(size: int) -> None:
            window.give(size)
            if closed and not window.used:
                queue.let_go(me)

        queue.consumers += 1
        try:
            if subscription.exclusive:
                await queue.hold(me)
            while True:
                await window.room()
                self._check_open()
                entry = await queue.get()
                entry.deliveries += 1
                queue.unsettled.add(entry)
                window.take(len(entry.message.body))
                yield MemoryDelivery(self._hub, queue, entry, subscription, settled, self._later)
        finally:
            queue.consumers -= 1
            closed = True
            if not window.used:  # else the last settlement hands the queue over
                queue.let_go(me)
            if not subscription.durable:
                self._hub.queues.pop(subscription.queue, None)

    def _later(self, delay: float, queue: Queue, entry: Entry) -> None:
        loop = asyncio.get_running_loop()
        queue.delayed += 1

        def fire() -> None:
            self._timers.discard(timer)
            queue.delayed -= 1
            queue.put(entry)

        timer = loop.call_later(delay, fire)
        self._timers.add(timer)

    # -- dead-letter admin ------------------------------------------------------

    def _stored(self, service: str) -> list[Message]:
        """The service's dead letters, those past the retention dropped first."""
        stored = self._hub.dead.setdefault(service, [])
        if self.dlq_retention:
            cutoff = datetime.now(UTC) - timedelta(seconds=self.dlq_retention)
            stored[:] = [
                m
                for m in stored
                if (DeadLetter.from_stored(m).reason.last_failure or cutoff) > cutoff
            ]
        return stored

    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        stored = self._stored(service)
        return [DeadLetter.from_stored(m) for m in stored[:limit]]

    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        return self._replay(service, ids, progress, None)

    async def replay_edited_dead_letter(self, service: str, id: str, message: Message) -> bool:
        return self._replay(service, {id}, None, message) == 1

    def _replay(
        self,
        service: str,
        ids: Collection[str] | None,
        progress: ProgressCallback | None,
        edited: Message | None,
    ) -> int:
        stored = self._stored(service)
        chosen = [m for m in stored if ids is None or m.id in ids]
        if edited is not None:
            chosen = chosen[:1]
        for done, message in enumerate(chosen, 1):
            letter = DeadLetter.from_stored(message)
            queue = self._hub.queues.get(letter.reason.queue)
            if queue is None:
                raise BrokerError(f"queue {letter.reason.queue!r} no longer exists; cannot replay")
            queue.put(Entry(edited or letter.for_replay()))
            stored.remove(message)
            if progress:
                progress(done, len(chosen))
        return len(chosen)

    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        stored = self._stored(service)
        keep = [m for m in stored if ids is not None and m.id not in ids]
        self._hub.dead[service] = keep
        return len(stored) - len(keep)

    # -- queue inspection -------------------------------------------------------

    async def inspect_queues(self, queues: Collection[str] | None = None) -> list[QueueStats]:
        now = time.monotonic()
        names = sorted(self._hub.queues if queues is None else set(queues) & set(self._hub.queues))
        stats = []
        for name in names:
            queue = self._hub.queues[name]
            oldest = now - queue.ready[0].ready_since if queue.ready else 0.0
            stats.append(
                QueueStats(
                    queue=name,
                    depth=len(queue.ready) + queue.delayed,
                    in_flight=len(queue.unsettled),
                    consumers=queue.consumers,
                    oldest_age=oldest,
                )
            )
        return stats

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerError(f"memory://{self.name} broker is closed")
