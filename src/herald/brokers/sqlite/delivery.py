"""Deliveries of the SQLite broker and the prefetch window they are counted in."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..broker import Delivery, Subscription
from ..deadletter import DeadLetter, DeadLetterReason
from .sqlite_store import Row, Store

__all__ = ["Runner", "SQLiteDelivery", "Window"]

Runner = Callable[[Callable[[Store], Any]], Awaitable[Any]]
"""Runs an operation in the broker's next transaction."""


class Window:
    """How many deliveries of one consumer are unsettled, and waiting for room."""

    __slots__ = ("_room", "size", "used")

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._room = asyncio.Event()

    @property
    def free(self) -> int:
        return self.size - self.used

    async def room(self) -> None:
        while self.used >= self.size:
            self._room.clear()
            await self._room.wait()

    def give(self) -> None:
        self.used -= 1
        self._room.set()


class SQLiteDelivery(Delivery):
    __slots__ = ("_consumer", "_run", "_seq", "_settled", "_window")

    def __init__(
        self,
        run: Runner,
        row: Row,
        subscription: Subscription,
        consumer: int,
        window: Window,
    ) -> None:
        super().__init__(row.message, subscription, row.attempt)
        self._run = run
        self._seq = row.seq
        self._consumer = consumer
        self._window = window
        self._settled = False

    async def _settle(self, operation: Callable[[Store], None]) -> None:
        if self._settled:
            return
        self._settled = True
        try:
            await self._run(operation)
        finally:
            self._window.give()

    async def ack(self) -> None:
        seq, me = self._seq, self._consumer
        await self._settle(lambda s: s.ack(seq, me))

    async def retry(self, delay: float, headers: Mapping[str, str]) -> None:
        seq, me = self._seq, self._consumer
        due, patch = time.time() + delay, json.dumps(dict(headers))
        await self._settle(lambda s: s.retry(seq, me, due, patch))

    async def release(self) -> None:
        seq, me = self._seq, self._consumer
        await self._settle(lambda s: s.release([seq], me))

    async def dead_letter(self, reason: DeadLetterReason) -> None:
        seq, me, service = self._seq, self._consumer, self.subscription.service
        stored = DeadLetter(self.message, reason).to_stored()
        await self._settle(lambda s: s.dead_letter(seq, me, service, stored))
