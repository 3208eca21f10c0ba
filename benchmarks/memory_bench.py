"""In-process suite: Herald on ``memory://`` against a bare ``asyncio.Queue``.

Both run publisher and consumer in one process (memory:// cannot cross processes).
This suite has no targets: it shows the runtime's own per-event overhead (encoding,
decoding, dispatch, settling) and is what the smoke test exercises.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from .harness import Contender, Publisher, Recorder, make_body, parse_body
from .herald_contender import HeraldContender
from .suite import Suite

__all__ = ["SUITE", "AsyncioQueueContender", "HeraldMemory"]


class HeraldMemory(HeraldContender):
    inline = True

    def url(self) -> str:
        return f"memory://bench-{self.run_id}"

    async def cleanup(self) -> None:
        """Nothing outlives the process."""


class _QueuePublisher:
    def __init__(self, queue: asyncio.Queue[bytes]) -> None:
        self._queue = queue

    async def publish(self, events: Sequence[tuple[int, int]]) -> None:
        for seq, sent_ns in events:
            self._queue.put_nowait(make_body(seq, sent_ns))


class AsyncioQueueContender(Contender):
    """The floor: JSON bodies through an ``asyncio.Queue``, no broker at all."""

    name = "asyncio.Queue"
    inline = True

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self._shared: asyncio.Queue[bytes] | None = None

    def _queue(self) -> asyncio.Queue[bytes]:
        if self._shared is None:
            self._shared = asyncio.Queue()
        return self._shared

    def publisher(self) -> AbstractAsyncContextManager[Publisher]:
        return self._publisher()

    @asynccontextmanager
    async def _publisher(self) -> AsyncIterator[Publisher]:
        yield _QueuePublisher(self._queue())

    async def consume(self, recorder: Recorder, ready: Callable[[], None]) -> None:
        queue = self._queue()
        ready()
        while not recorder.complete:
            recorder.handled(*parse_body(await queue.get()))


SUITE = Suite("memory", (AsyncioQueueContender, HeraldMemory), baseline="asyncio.Queue")
