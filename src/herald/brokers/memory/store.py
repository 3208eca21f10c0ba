"""Where the memory broker keeps things: named hubs of queues and dead letters."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from ...broker import Subscription
from ...message import Message

__all__ = ["Entry", "Hub", "Queue", "hub"]


@dataclass(slots=True, eq=False)
class Entry:
    """A message in one queue, with its delivery count and when it became ready."""

    message: Message
    deliveries: int = 0
    ready_since: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class Queue:
    subscription: Subscription
    ready: deque[Entry] = field(default_factory=deque)
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    unsettled: set[Entry] = field(default_factory=set)
    delayed: int = 0
    consumers: int = 0
    holder: object | None = None
    """The consumer of an exclusive subscription now taking deliveries."""
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def hold(self, consumer: object) -> None:
        """Wait until no other consumer holds the queue, then hold it."""
        while self.holder is not None:
            self.released.clear()
            await self.released.wait()
        self.holder = consumer

    def let_go(self, consumer: object) -> None:
        if self.holder is consumer:
            self.holder = None
            self.released.set()

    def put(self, entry: Entry, *, front: bool = False) -> None:
        entry.ready_since = time.monotonic()
        if front:
            self.ready.appendleft(entry)
        else:
            self.ready.append(entry)
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def get(self) -> Entry:
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
class Hub:
    """One named in-process broker: its queues and its dead letters by service."""

    queues: dict[str, Queue] = field(default_factory=dict)
    dead: dict[str, list[Message]] = field(default_factory=dict)
    scheduled: set[asyncio.TimerHandle] = field(default_factory=set)
    """Timers of scheduled messages, routed to the queues at their due time."""


_HUBS: dict[str, Hub] = {}


def hub(name: str, *, fresh: bool = False) -> Hub:
    """The hub called ``name`` in this process (a new, empty one with ``fresh``)."""
    if fresh:
        _HUBS.pop(name, None)
    return _HUBS.setdefault(name, Hub())
