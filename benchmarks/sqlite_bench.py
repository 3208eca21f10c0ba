"""SQLite suite: Herald's embedded broker against persist-queue, two processes each.

* ``herald`` — ``sqlite:////tmp/herald-bench-<run>/bench.db`` (see
  :mod:`benchmarks.herald_contender`: one ``publish_many`` batch per window).
* ``persist-queue`` (baseline) — ``persistqueue.SQLiteAckQueue`` with
  ``multithreading=True``, publisher and consumer processes sharing the directory,
  its connections switched to ``PRAGMA synchronous=NORMAL`` (WAL without fsync per
  commit), which is what Herald's SQLite broker does by default.
  It has no batch put (every ``put`` is its own commit) and its wake-up event does
  not cross processes, so the consumer polls ``get(block=False)`` and sleeps 1 ms
  when the queue is empty; every event is acked by id after it is handled.

Targets (Herald): throughput >= 10,000 events/s; p99 <= 10 ms at a steady 1,000/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import persistqueue
from persistqueue import Empty

from .harness import LATENCY, THROUGHPUT, Contender, Publisher, Recorder, make_body, parse_body
from .herald_contender import HeraldContender
from .kombu_contender import KombuSQLAlchemyContender
from .report import at_least, p99_at_most
from .suite import Suite

__all__ = ["SUITE", "HeraldSQLite", "PersistQueueContender"]

EMPTY_POLL = 0.001


def _workdir(run_id: str) -> Path:
    return Path(tempfile.gettempdir()) / f"herald-bench-{run_id}"


class HeraldSQLite(HeraldContender):
    def url(self) -> str:
        directory = _workdir(self.run_id)
        directory.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{directory}/bench.db"

    async def cleanup(self) -> None:
        try:
            await super().cleanup()
        finally:
            shutil.rmtree(_workdir(self.run_id), ignore_errors=True)


def _ack_queue(run_id: str) -> Any:
    path = _workdir(run_id) / "persistqueue"
    queue = persistqueue.SQLiteAckQueue(str(path), multithreading=True, auto_resume=True)
    connections: list[Any] = [queue._putter, queue._getter]
    for connection in {id(c): c for c in connections}.values():
        connection.execute("PRAGMA synchronous=NORMAL")
    return queue


class _PersistQueuePublisher:
    def __init__(self, queue: Any) -> None:
        self._queue = queue

    async def publish(self, events: Sequence[tuple[int, int]]) -> None:
        for seq, sent_ns in events:
            self._queue.put(make_body(seq, sent_ns))


class PersistQueueContender(Contender):
    name = "persist-queue"
    max_events = 10_000

    async def check(self) -> None:
        _ack_queue(self.run_id).close()

    def publisher(self) -> AbstractAsyncContextManager[Publisher]:
        return self._publisher()

    @asynccontextmanager
    async def _publisher(self) -> AsyncIterator[Publisher]:
        queue = _ack_queue(self.run_id)
        try:
            yield _PersistQueuePublisher(queue)
        finally:
            queue.close()

    async def consume(self, recorder: Recorder, ready: Callable[[], None]) -> None:
        queue = _ack_queue(self.run_id)
        try:
            ready()
            while not recorder.complete:
                try:
                    item = queue.get(block=False, raw=True)
                except Empty:
                    await asyncio.sleep(EMPTY_POLL)
                    continue
                recorder.handled(*parse_body(item["data"]))
                queue.ack(id=item["pqid"])
        finally:
            queue.close()

    async def cleanup(self) -> None:
        shutil.rmtree(_workdir(self.run_id) / "persistqueue", ignore_errors=True)
        with contextlib.suppress(OSError):
            _workdir(self.run_id).rmdir()


SUITE = Suite(
    "sqlite",
    (PersistQueueContender, KombuSQLAlchemyContender, HeraldSQLite),
    baseline="persist-queue",
    targets={
        ("herald", THROUGHPUT): [at_least(10_000)],
        ("herald", LATENCY): [p99_at_most(10)],
    },
)
