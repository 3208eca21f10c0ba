"""FastStream as a contender: the pieces every suite's FastStream peer shares.

A suite subclasses :class:`FastStreamContender`: it builds the broker, names where a
publish goes and registers one typed subscriber, configured the way FastStream's docs
recommend for durable, acknowledged work on that broker (FastStream acks a message
after its handler returned). A throughput window is a ``gather`` of
``broker.publish`` calls (each awaits the broker's confirmation; at most ``in_flight``
at once), a latency event one call. FastStream is imported on first use: without it
only this contender is unavailable.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from pydantic import BaseModel

from .harness import PAD, Contender, Publisher, Recorder

__all__ = ["BenchModel", "FastStreamContender"]


class BenchModel(BaseModel):
    seq: int
    sent_ns: int
    pad: str = PAD


class _FastStreamPublisher:
    def __init__(self, broker: Any, target: dict[str, Any], in_flight: int) -> None:
        self._broker = broker
        self._target = target
        self._slots = asyncio.Semaphore(in_flight)

    async def _one(self, seq: int, sent_ns: int) -> None:
        async with self._slots:
            await self._broker.publish(BenchModel(seq=seq, sent_ns=sent_ns), **self._target)

    async def publish(self, events: Sequence[tuple[int, int]]) -> None:
        await asyncio.gather(*(self._one(seq, sent_ns) for seq, sent_ns in events))


class FastStreamContender(Contender):
    name = "faststream"
    in_flight = 1_000_000
    """Publishes in flight at once (a connection pool that fails when exhausted needs
    a bound)."""

    @abc.abstractmethod
    def broker(self) -> Any:
        """A new, unconnected FastStream broker."""

    @abc.abstractmethod
    def target(self) -> dict[str, Any]:
        """Keyword arguments of ``broker.publish`` naming where events go."""

    @abc.abstractmethod
    def subscribe(self, broker: Any, handle: Callable[[BenchModel], Any]) -> None:
        """Register ``handle`` as the one subscriber."""

    async def prepare(self, broker: Any) -> None:
        """Declare what publishing needs (the publisher runs before the consumer)."""

    async def check(self) -> None:
        broker = self.broker()
        try:
            await broker.connect()
            if not await broker.ping(timeout=2.0):
                raise ConnectionError("the server did not answer a ping within 2s")
        finally:
            await broker.stop()

    def publisher(self) -> AbstractAsyncContextManager[Publisher]:
        return self._publisher()

    @asynccontextmanager
    async def _publisher(self) -> AsyncIterator[Publisher]:
        broker = self.broker()
        await broker.connect()
        try:
            await self.prepare(broker)
            yield _FastStreamPublisher(broker, self.target(), self.in_flight)
        finally:
            await broker.stop()

    async def consume(self, recorder: Recorder, ready: Callable[[], None]) -> None:
        broker = self.broker()

        async def handle(body: BenchModel) -> None:
            recorder.handled(body.seq, body.sent_ns)

        self.subscribe(broker, handle)
        await broker.start()
        try:
            ready()
            await recorder.done.wait()
        finally:
            await broker.stop()
