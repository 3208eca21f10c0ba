"""The prefetch window: what one consumer holds unsettled, in messages and bytes."""

from __future__ import annotations

import asyncio

from .broker import Prefetch

__all__ = ["Window"]


class Window:
    """Counts a consumer's unsettled deliveries against its :class:`herald.Prefetch`.

    There is room while both the message count and the bytes are under their bounds;
    an empty window always has room, so one body larger than the byte bound flows.

    >>> w = Window(Prefetch(messages=2, bytes=100))
    >>> w.take(80); w.has_room, w.free
    (True, 1)
    >>> w.take(30); w.has_room
    False
    >>> w.give(80); w.has_room
    True
    """

    __slots__ = ("_room", "bytes", "limit", "used")

    def __init__(self, limit: Prefetch) -> None:
        self.limit = limit
        self.used = 0
        self.bytes = 0
        self._room = asyncio.Event()

    @property
    def has_room(self) -> bool:
        return self.used == 0 or (self.used < self.limit.messages and self.bytes < self.limit.bytes)

    @property
    def free(self) -> int:
        """How many more messages the count allows (bytes permitting)."""
        return self.limit.messages - self.used if self.has_room else 0

    async def room(self, messages: int = 1) -> None:
        """Wait until there is room for ``messages`` more deliveries (bytes permitting;
        the whole bound when it is smaller), or the window is empty."""
        wanted = min(messages, self.limit.messages)
        while not (self.has_room and (self.used == 0 or self.free >= wanted)):
            self._room.clear()
            await self._room.wait()

    def take(self, size: int) -> None:
        """Count a delivery of ``size`` bytes handed out."""
        self.used += 1
        self.bytes += size

    def give(self, size: int) -> None:
        """Count a delivery of ``size`` bytes settled (or given back)."""
        self.used -= 1
        self.bytes -= size
        self._room.set()
