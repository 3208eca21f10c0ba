"""Stopping background tasks without losing a cancellation of the one that stops them
(a NATS consumer's close swallowed its owner's cancellation: the scheduler loop then
ran on and the bus never closed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from herald.errors import BrokerError
from herald.message import Message
from herald.scheduler import Scheduler
from herald.tasks import cancel_and_wait


async def slow_to_stop(stopping: asyncio.Event) -> None:
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        stopping.set()
        await asyncio.sleep(0.2)  # cleanup that takes a while
        raise


async def test_the_stopped_tasks_cancellation_is_not_raised() -> None:
    stopping = asyncio.Event()
    background = asyncio.create_task(slow_to_stop(stopping))
    await asyncio.sleep(0)
    await cancel_and_wait(background)
    assert background.cancelled() and stopping.is_set()


async def test_a_cancellation_of_the_caller_while_it_waits_is_raised() -> None:
    stopping = asyncio.Event()
    background = asyncio.create_task(slow_to_stop(stopping))
    after: list[str] = []

    async def owner() -> None:
        await asyncio.sleep(0)
        await cancel_and_wait(background)
        after.append("ran on")  # what contextlib.suppress(CancelledError) allowed
        await asyncio.sleep(60)

    running = asyncio.create_task(owner())
    await stopping.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 5)
    assert after == []


async def test_an_error_the_task_ended_with_is_raised() -> None:
    async def failing() -> None:
        raise ValueError("boom")

    background = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="boom"):
        await cancel_and_wait(background)


class CancelSwallowingBroker:
    """What a client library did under load: the cancellation of a consumer's task
    came out of the broker call as an error of its own."""

    def __init__(self) -> None:
        self.consuming = asyncio.Event()

    async def declare(self, subscription: object) -> None:
        return None

    async def consume(self, subscription: object, prefetch: object) -> AsyncIterator[Message]:
        self.consuming.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise BrokerError("creating consumer failed: stream not found") from None
        yield Message(type="never", body=b"")


async def test_the_scheduler_stops_when_its_cancellation_comes_back_as_an_error() -> None:
    broker = CancelSwallowingBroker()
    scheduler = Scheduler(broker)  # type: ignore[arg-type]
    await scheduler.start()
    await asyncio.wait_for(broker.consuming.wait(), 5)
    await asyncio.wait_for(scheduler.stop(), 5)  # it used to sleep and subscribe again
    assert not scheduler.running
