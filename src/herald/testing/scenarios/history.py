"""Backfill: a service added later starts with the retained history, then live."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict

from ...context import Context
from ...service import Service
from ..environment import Environment
from ..events import Keyed
from ..recorder import Recorder

__all__ = ["backfill_replays_history_once_then_live"]


async def backfill_replays_history_once_then_live(env: Environment) -> None:
    """Events published before the service existed come first, then live ones: each
    once, in order per key; a restart replays nothing."""
    seen: Recorder[tuple[str, int]] = Recorder()
    name = env.service_name("backfill")

    def service() -> Service:
        made = Service(name, concurrency=4)

        @made.on(Keyed, backfill=True)
        async def record(event: Keyed, ctx: Context) -> None:
            seen.add((event.key, event.seq))

        return made

    def batch(seqs: range) -> list[tuple[Keyed, str]]:
        return [(Keyed(key=f"k{s % 2}", seq=s), f"k{s % 2}") for s in seqs]

    async with env.connect() as bus:
        await bus.publish_many(batch(range(6)))  # no queue is bound yet
        worker = await bus.start(service())
        await bus.publish_many(batch(range(6, 10)))
        await seen.wait_for(10)
        await asyncio.sleep(0.3)
        await worker.stop()
    async with env.connect() as bus:
        worker = await bus.start(service())
        await bus.publish_many(batch(range(10, 12)))
        await seen.wait_for(12)
        await asyncio.sleep(0.3)
        await worker.stop()
    counts = Counter(seen.items)
    assert sorted(counts) == [(f"k{s % 2}", s) for s in sorted(range(12), key=lambda s: (s % 2, s))]
    assert set(counts.values()) == {1}, f"handled more than once: {counts}"
    order: dict[str, list[int]] = defaultdict(list)
    for key, seq in seen.items[:10]:
        order[key].append(seq)
    assert order == {"k0": [0, 2, 4, 6, 8], "k1": [1, 3, 5, 7, 9]}, f"order per key: {order}"
