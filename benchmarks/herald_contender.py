"""Herald itself as a contender, through its public API only.

The publisher uses ``bus.publish_many`` for a throughput window (one batch per
window) and ``bus.publish`` for each paced latency event. The consumer is a
``herald.Service`` with one typed handler, run by ``bus.start(service)``; events
carry no key, so they are handled concurrently (the service's concurrency bound).
Subclasses name the broker URL; cleanup uses the broker's ``destroy()``.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import herald

from .harness import PAD, Contender, Publisher, Recorder

__all__ = ["SERVICE", "BenchEvent", "HeraldContender"]

SERVICE = "bench"


class BenchEvent(herald.Event, type="bench.event"):
    seq: int
    sent_ns: int
    pad: str = PAD


class _HeraldPublisher:
    def __init__(self, bus: herald.Bus) -> None:
        self._bus = bus

    async def publish(self, events: Sequence[tuple[int, int]]) -> None:
        if len(events) == 1:
            seq, sent_ns = events[0]
            await self._bus.publish(BenchEvent(seq=seq, sent_ns=sent_ns))
            return
        await self._bus.publish_many(
            [BenchEvent(seq=seq, sent_ns=sent_ns) for seq, sent_ns in events]
        )


class HeraldContender(Contender):
    """Herald on the broker at :meth:`url` (defaults: concurrency 16, prefetch 64)."""

    name = "herald"
    concurrency = 16
    prefetch = 64

    @abc.abstractmethod
    def url(self) -> str:
        """The broker URL, unique per run id."""

    async def check(self) -> None:
        async with herald.connect(self.url()):
            pass

    def publisher(self) -> AbstractAsyncContextManager[Publisher]:
        return self._publisher()

    @asynccontextmanager
    async def _publisher(self) -> AsyncIterator[Publisher]:
        async with herald.connect(self.url()) as bus:
            yield _HeraldPublisher(bus)

    async def consume(self, recorder: Recorder, ready: Callable[[], None]) -> None:
        service = herald.Service(SERVICE, concurrency=self.concurrency, prefetch=self.prefetch)

        @service.on(BenchEvent)
        async def handle(event: BenchEvent) -> None:
            recorder.handled(event.seq, event.sent_ns)

        async with herald.connect(self.url()) as bus:
            worker = await bus.start(service)
            try:
                ready()
                await recorder.done.wait()
            finally:
                await worker.stop()

    async def cleanup(self) -> None:
        async with herald.connect(self.url()) as bus:
            await bus.broker.destroy()
