"""Stopping Redis consumers: a cancellation ends a consume loop the first time, even
one landing as a command is sent (which ``asyncio.wait_for`` swallows on Python 3.11),
and what the loop had read but not handed out is given back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

import pytest
from redis.asyncio.connection import Connection

from herald import Context, Service
from herald.brokers.redis import RedisSettings
from herald.brokers.redis.connection import new_client
from herald.bus import connect
from herald.message import Message
from herald.testing.recorder import Recorder

from .conftest import shared_url

pytestmark = pytest.mark.redis

IGNORED = "ignored cancellation"


async def test_stopping_a_worker_mid_read_cancels_it_once_and_loses_nothing(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    cycles = 20
    seen: Recorder[int] = Recorder()
    service = Service(f"stops-{uuid.uuid4().hex[:6]}")

    @service.on("demo.tick")
    async def record(message: Message, ctx: Context) -> None:
        seen.add(json.loads(message.body)["n"])

    caplog.set_level(logging.WARNING, logger="herald")
    # a long block: a consumer that carried on would sit in XREADGROUP past the
    # worker's first cancellation
    async with connect(shared_url(namespace, block=5)) as bus:
        for n in range(cycles):
            worker = await bus.start(service)
            # meanwhile its first commands are sent, one of them reading this
            await bus.publish(Message(type="demo.tick", body=json.dumps({"n": n}).encode()))
            await worker.stop()
        worker = await bus.start(service)
        await seen.wait_for(cycles)
        await worker.stop()
    assert [r.getMessage() for r in caplog.records if IGNORED in r.getMessage()] == []
    assert sorted(seen.items) == list(range(cycles)), "each message handled exactly once"


async def test_a_cancellation_swallowed_while_sending_is_raised(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = asyncio.Event()
    original = Connection.send_packed_command

    async def swallowing(self: Connection, command: Any, check_health: bool = True) -> None:
        await original(self, command, check_health)
        if not sent.is_set():
            sent.set()
            # what asyncio.wait_for does on Python 3.11 when the write completes as
            # its task is cancelled
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()

    monkeypatch.setattr(Connection, "send_packed_command", swallowing)
    client = new_client(RedisSettings.from_url(shared_url(namespace)))
    key = f"{namespace}:cancelled"
    try:
        reading = asyncio.create_task(client.xread({key: "$"}, block=60_000))
        await sent.wait()
        reading.cancel()
        # bounds the wait only: unfixed, the read sits out its block
        async with asyncio.timeout(10):
            await asyncio.wait({reading})
        assert reading.cancelled()
        # the connection it left is not read out of step by the next command
        await client.set(key, "next")
        assert await client.get(key) == b"next"
    finally:
        await client.delete(key)
        await client.aclose()
