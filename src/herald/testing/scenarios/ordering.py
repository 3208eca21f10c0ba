"""Concurrency, ordering per key (also under retries) and graceful shutdown."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict

from ...context import Context
from ...retry import RetryPolicy
from ...service import Service
from ..environment import Environment
from ..events import Keyed, Tick
from ..recorder import Recorder, eventually

__all__ = [
    "graceful_shutdown_finishes_in_flight_and_keeps_the_rest",
    "ordering_per_key_under_concurrency",
    "ordering_per_key_under_retries",
    "shutdown_deadline_cancels_and_redelivers",
]


async def ordering_per_key_under_concurrency(env: Environment) -> None:
    keys, per_key = 10, 30
    order: dict[str, list[int]] = defaultdict(list)
    done: Recorder[int] = Recorder()
    running: Counter[str] = Counter()
    overlap: list[str] = []
    peak = 0
    service = Service(env.service_name("ordered"), concurrency=8)

    @service.on(Keyed)
    async def handle(event: Keyed, ctx: Context) -> None:
        nonlocal peak
        running[event.key] += 1
        peak = max(peak, sum(running.values()))
        if running[event.key] > 1:
            overlap.append(event.key)
        await asyncio.sleep(random.uniform(0.001, 0.004))
        order[event.key].append(event.seq)
        running[event.key] -= 1
        done.add(1)

    async with env.connect() as bus:
        worker = await bus.start(service)
        events = [(Keyed(key=f"k{k}", seq=s), f"k{k}") for s in range(per_key) for k in range(keys)]
        await bus.publish_many(events)
        await done.wait_for(keys * per_key, timeout=60)
        await worker.stop()
    assert not overlap, f"events with the same key ran concurrently: {overlap[:5]}"
    for key, seqs in order.items():
        assert seqs == list(range(per_key)), f"key {key} handled out of order: {seqs}"
    assert peak > 1, "different keys must run concurrently"


async def ordering_per_key_under_retries(env: Environment) -> None:
    """A failing delivery holds its key until it succeeds or is dead-lettered; later
    events of that key wait, other keys go on."""
    order: dict[str, list[tuple[int, int]]] = defaultdict(list)
    done: Recorder[str] = Recorder()
    service = Service(
        env.service_name("ordered-retry"),
        concurrency=4,
        retry=RetryPolicy(attempts=3, initial_delay=0.2, multiplier=1.0, jitter=0),
    )

    @service.on(Keyed)
    async def handle(event: Keyed, ctx: Context) -> None:
        order[event.key].append((event.seq, ctx.attempt))
        if event.key == "slow" and event.seq == 0 and ctx.attempt < 3:
            raise RuntimeError("first event of key 'slow' fails twice")
        done.add(f"{event.key}:{event.seq}")

    async with env.connect() as bus:
        worker = await bus.start(service)
        await bus.publish_many(
            (Keyed(key=key, seq=s), key) for s in range(3) for key in ("slow", "fast")
        )
        await done.wait_for(6, timeout=30)
        await worker.stop()
    assert order["slow"] == [(0, 1), (0, 2), (0, 3), (1, 1), (2, 1)], order["slow"]
    assert order["fast"] == [(0, 1), (1, 1), (2, 1)], order["fast"]
    assert done.items.index("fast:2") < done.items.index("slow:0"), (
        f"other keys went on: {done.items}"
    )


async def graceful_shutdown_finishes_in_flight_and_keeps_the_rest(env: Environment) -> None:
    started: Recorder[int] = Recorder()
    finished: Recorder[int] = Recorder()
    service = Service(env.service_name("graceful"), concurrency=2, prefetch=4)

    @service.on(Tick)
    async def slow(event: Tick, ctx: Context) -> None:
        started.add(event.n)
        await asyncio.sleep(0.4)
        finished.add(event.n)

    async with env.connect() as bus:
        worker = await bus.start(service)
        await bus.publish_many(Tick(n=n) for n in range(8))
        await started.wait_for(2)
        in_flight = list(started.items)
        await worker.stop(timeout=5.0)
        assert sorted(finished.items) == sorted(in_flight), "exactly the in-flight ones finished"
        assert started.items == in_flight, "nothing was started after stop()"
        worker = await bus.start(service)
        await eventually(lambda: len(finished) >= 8, timeout=30, what="the rest handled")
        await asyncio.sleep(0.3)
        await worker.stop()
    assert sorted(finished.items) == list(range(8)), f"each once in the end: {finished.items}"


async def shutdown_deadline_cancels_and_redelivers(env: Environment) -> None:
    started: Recorder[int] = Recorder()
    cancelled: Recorder[int] = Recorder()
    finished: Recorder[int] = Recorder()
    service = Service(env.service_name("stuck"), concurrency=1)

    @service.on(Tick)
    async def stuck(event: Tick, ctx: Context) -> None:
        started.add(event.n)
        if len(started) == 1:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.add(event.n)
                raise
        finished.add(event.n)

    async with env.connect() as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=9))
        await started.wait_for(1)
        await worker.stop(timeout=0.3)
        assert cancelled.items == [9], "the handler past the deadline was cancelled"
        assert finished.items == []
        worker = await bus.start(service)
        await finished.wait_for(1, timeout=60)
        await worker.stop()
    assert finished.items == [9] and started.items == [9, 9]
