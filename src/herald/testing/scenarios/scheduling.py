"""Scheduled publishing: ``publish(at=...)`` and ``publish(delay=...)``."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from ...context import Context
from ...schedule import due_of
from ...service import Service
from ..environment import Environment
from ..events import Tick
from ..recorder import Recorder

__all__ = ["scheduled_events_arrive_when_due_once_per_service"]

DELAY = 0.6


async def scheduled_events_arrive_when_due_once_per_service(env: Environment) -> None:
    """Events published with a delay, or a time, by a process that then goes away,
    are not delivered before they are due, then once to each subscribing service; a
    time already past delivers at once."""
    recorders = [Recorder[tuple[int, float]]() for _ in range(2)]
    services = [_recording(env, f"sched{i}", seen) for i, seen in enumerate(recorders)]
    async with env.connect(scheduler=True) as bus:
        workers = [await bus.start(service) for service in services]
        async with env.connect() as publisher:  # the publishing process goes away
            later = await publisher.publish(Tick(n=1), delay=timedelta(seconds=DELAY))
            at = datetime.now(UTC) + timedelta(seconds=DELAY)
            [timed] = await publisher.publish_many([Tick(n=2)], at=at)
            await publisher.publish(Tick(n=0), at=datetime.now(UTC) - timedelta(hours=1))
        due = {1: due_of(later), 2: due_of(timed)}
        for seen in recorders:
            await seen.wait_for(3, timeout=30)
        await asyncio.sleep(0.3)  # time for a duplicate to show up
        for worker in workers:
            await worker.stop()
    for seen in recorders:
        numbers = sorted(n for n, _ in seen.items)
        assert numbers == [0, 1, 2], f"each service gets each event once: {numbers}"
        for n, when in seen.items:
            expected = due.get(n)
            assert expected is None or when >= expected, f"event {n} arrived before it was due"


def _recording(env: Environment, base: str, seen: Recorder[tuple[int, float]]) -> Service:
    service = Service(env.service_name(base))

    @service.on(Tick)
    async def record(event: Tick, ctx: Context) -> None:
        seen.add((event.n, time.time()))

    return service
