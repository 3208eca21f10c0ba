"""kombu's SQLAlchemy transport on a SQLite file, as a second SQLite-backed contender.

kombu is synchronous: its calls block the event loop of the benchmark's publisher
and consumer processes, which is fine since each process does nothing else. The
transport keeps one row per message and hides it on delivery (acks are settled in
the consumer's memory); the consumer polls every 1 ms when the queue is empty
(``Transport.polling_interval``; the default is 1 s). Each publish is one commit;
the SQLite file keeps SQLAlchemy's defaults (rollback journal, full fsync).
Exchange bindings of kombu's virtual transports live in process memory, so the
publisher declares the queue too.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from .harness import PAD, Contender, Publisher, Recorder

__all__ = ["KombuSQLAlchemyContender"]

POLL = 0.001
PREFETCH = 64


def _workdir(run_id: str) -> Path:
    return Path(tempfile.gettempdir()) / f"herald-bench-kombu-{run_id}"


def _kombu() -> Any:
    """kombu, imported on first use: without it only this contender is unavailable."""
    return importlib.import_module("kombu")


def _connection(run_id: str) -> Any:
    directory = _workdir(run_id)
    directory.mkdir(parents=True, exist_ok=True)
    connection = _kombu().Connection(f"sqla+sqlite:///{directory}/kombu.db")
    connection.connect()
    connection.transport.polling_interval = POLL
    return connection


def _queue() -> Any:
    exchange = _kombu().Exchange("bench", type="direct", durable=True)
    return _kombu().Queue("bench", exchange, routing_key="bench.event", durable=True)


class _KombuPublisher:
    def __init__(self, producer: Any, queue: Any) -> None:
        self._producer = producer
        self._queue = queue

    async def publish(self, events: Sequence[tuple[int, int]]) -> None:
        for seq, sent_ns in events:
            self._producer.publish(
                {"seq": seq, "sent_ns": sent_ns, "pad": PAD},
                exchange=self._queue.exchange,
                routing_key="bench.event",
                serializer="json",
                delivery_mode=2,
            )


class KombuSQLAlchemyContender(Contender):
    name = "kombu-sqlalchemy"
    max_events = 1_000

    async def check(self) -> None:
        connection = _connection(self.run_id)
        try:
            _queue()(connection.default_channel).declare()
        finally:
            connection.release()

    def publisher(self) -> AbstractAsyncContextManager[Publisher]:
        return self._publisher()

    @asynccontextmanager
    async def _publisher(self) -> AsyncIterator[Publisher]:
        connection = _connection(self.run_id)
        queue = _queue()
        try:
            queue(connection.default_channel).declare()
            yield _KombuPublisher(connection.Producer(), queue)
        finally:
            connection.release()

    async def consume(self, recorder: Recorder, ready: Callable[[], None]) -> None:
        connection = _connection(self.run_id)

        def on_message(body: Any, message: Any) -> None:
            recorder.handled(int(body["seq"]), int(body["sent_ns"]))
            message.ack()

        try:
            consumer = connection.Consumer(
                [_queue()], callbacks=[on_message], prefetch_count=PREFETCH, accept=["json"]
            )
            with consumer:
                ready()
                while not recorder.complete:
                    with contextlib.suppress(TimeoutError):
                        connection.drain_events(timeout=0.05)
                    await asyncio.sleep(0)
        finally:
            connection.release()

    async def cleanup(self) -> None:
        shutil.rmtree(_workdir(self.run_id), ignore_errors=True)
