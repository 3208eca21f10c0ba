"""Queue inspection: exact counts read from the file, the same for every process."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from herald import QueueInspection, QueueStats
from herald.broker import Prefetch, Subscription

from .helpers import HOLDER, SUB, Child, connected, messages, settles_on, stats, url_for

OTHER = Subscription("audit", "all", ("#",))


Counts = tuple[int, int | None, int | None]


async def _counts(broker: QueueInspection, queue: str = SUB.queue) -> Counts:
    (found,) = await broker.inspect_queues([queue])
    return found.depth, found.in_flight, found.consumers


async def test_counts_across_two_processes(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with connected(path) as broker:
        assert isinstance(broker, QueueInspection)
        await broker.declare(SUB)
        await broker.publish(messages(10))
        assert await _counts(broker) == (10, 0, 0)
        child = Child(HOLDER, url_for(path), "3")
        try:
            held = (await child.line()).split()[1:]
            assert len(held) == 3
            assert await _counts(broker) == (7, 3, 1), "the child holds 3 and consumes"
            stream = broker.consume(SUB, Prefetch(messages=2))
            mine = [await anext(stream), await anext(stream)]
            assert await _counts(broker) == (5, 5, 2)
            await mine[0].retry(60, {})
            assert await _counts(broker) == (6, 4, 2), "a retry waiting its delay is depth"
            await mine[1].ack()
            assert await _counts(broker) == (6, 3, 2)
            child.process.send_signal(signal.SIGKILL)
            await settles_on(lambda: _counts(broker), (9, 0, 1), timeout=20)
        finally:
            child.kill()
        await stream.aclose()
        assert await _counts(broker) == (9, 0, 0), "no consume loop on the queue any more"


async def test_oldest_age_counts_only_ready_messages(tmp_path: Path) -> None:
    async with connected(tmp_path / "h.db") as broker:
        await broker.declare(SUB)
        assert (await stats(broker)).oldest_age == 0.0
        await broker.publish(messages(2))
        await asyncio.sleep(0.3)
        waited = (await stats(broker)).oldest_age
        assert waited is not None and waited >= 0.3
        stream = broker.consume(SUB, Prefetch(messages=2))
        first, second = await anext(stream), await anext(stream)
        assert (await stats(broker)).oldest_age == 0.0, "nothing waits: both are in flight"
        await first.retry(60, {})
        assert (await stats(broker)).oldest_age == 0.0, "a retry waiting its delay is not ready"
        await second.release()
        released = (await stats(broker)).oldest_age
        assert released is not None and released < waited, "released: ready again from now"
        await stream.aclose()


async def test_queues_are_listed_by_name_and_unknown_names_left_out(tmp_path: Path) -> None:
    async with connected(tmp_path / "h.db") as broker:
        await broker.declare(SUB)
        await broker.declare(OTHER)
        await broker.publish(messages(2))
        everything = await broker.inspect_queues()
        assert everything == [
            QueueStats(OTHER.queue, 2, 0, 0, everything[0].oldest_age),
            QueueStats(SUB.queue, 2, 0, 0, everything[1].oldest_age),
        ]
        assert [s.queue for s in await broker.inspect_queues([SUB.queue, "nope.x"])] == [SUB.queue]
        assert await broker.inspect_queues(["nope.x"]) == []
        assert await broker.inspect_queues([]) == []
