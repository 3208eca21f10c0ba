"""A hundred services on one connection: a channel each, none closed by the server.

With that many consumer channels aiormq's short write queue is often full, and a
frame waiting for room in it could be overtaken: an ack after a later ``multiple``
ack made RabbitMQ close the channel (``unknown delivery tag``), an ack after its
channel's close, the whole connection (``expected 'channel.open'``). Each service
must get every event with no channel or connection error logged.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

import herald
from herald.handler import HandlerFunc

from .conftest import destroy

pytestmark = pytest.mark.amqp

SERVICES = 100
EVENTS = 5


class Pinged(herald.Event, type="channels.pinged"):
    n: int


def services(handled: dict[int, set[int]], done: asyncio.Event) -> list[herald.Service]:
    made = []
    for index in range(SERVICES):
        service = herald.Service(f"many{index}")

        def handler(index: int) -> HandlerFunc:
            async def record(event: Pinged) -> None:
                handled[index].add(event.n)
                if all(len(seen) == EVENTS for seen in handled.values()):
                    done.set()

            return record

        service.on(Pinged)(handler(index))
        made.append(service)
    return made


async def test_a_hundred_services_on_one_connection_lose_no_channel(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    handled: dict[int, set[int]] = {index: set() for index in range(SERVICES)}
    done = asyncio.Event()
    caplog.set_level(logging.WARNING)
    try:
        async with herald.connect(url) as bus:
            workers = await asyncio.gather(*(bus.start(s) for s in services(handled, done)))
            for n in range(EVENTS):
                await bus.publish(Pinged(n=n))
            await asyncio.wait_for(done.wait(), 30)
            await asyncio.gather(*(worker.stop() for worker in workers))
    finally:
        await destroy(url)
    assert handled == {index: set(range(EVENTS)) for index in range(SERVICES)}
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == []
