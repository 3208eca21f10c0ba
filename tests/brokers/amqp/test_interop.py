"""Ruby services on the same bus (Bunny: Active Publisher / Action Subscriber)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import pytest

import herald

from .support import INTEROP, SERVER, require_bunny

pytestmark = pytest.mark.amqp


class EmployeeCreated(herald.Event, type="employee.created"):
    guid: str
    name: str = ""


async def ruby(script: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "ruby",
        str(INTEROP / script),
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode().strip()


async def test_bunny_publishes_herald_handles(url: str, namespace: str) -> None:
    require_bunny()
    service = herald.Service("payroll")
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    @service.on(EmployeeCreated)
    async def created(event: EmployeeCreated, ctx: herald.Context) -> None:
        await events.put(("created", (event, ctx.message)))

    @service.on("document.*")
    async def uploaded(message: herald.Message) -> None:
        await events.put(("uploaded", message))

    async with herald.connect(url) as bus:
        try:
            worker = await bus.start(service)
            out = await ruby("bunny_publish.rb", SERVER.rstrip("/"), f"{namespace}.events")
            assert out == "CONFIRMED"
            got = dict([await asyncio.wait_for(events.get(), 10) for _ in range(2)])
            await worker.stop()
        finally:
            await bus.broker.destroy()

    event, message = got["created"]
    assert event == EmployeeCreated(guid="g-ruby-1", name="Ada")
    assert message.type == "employee.created" and message.datacontenttype == "application/json"
    document = got["uploaded"]
    assert isinstance(document, herald.Message)
    assert document.type == "document.uploaded"
    assert document.datacontenttype == "application/protobuf"
    assert document.body == b"\x0a\x07g-ruby-2\x10\x96\x01"


async def test_bunny_poison_is_dead_lettered_by_the_runtime(url: str, namespace: str) -> None:
    require_bunny()
    service = herald.Service("payroll")
    handled: list[str] = []

    @service.on(EmployeeCreated)
    async def created(event: EmployeeCreated, ctx: herald.Context) -> None:
        handled.append(ctx.message.id)

    async with herald.connect(url) as bus:
        try:
            worker = await bus.start(service)
            out = await ruby("bunny_poison.rb", SERVER.rstrip("/"), f"{namespace}.events")
            assert out == "CONFIRMED"
            deadline = asyncio.get_running_loop().time() + 20
            while len(letters := await bus.dead_letters("payroll")) < 4 or not handled:
                assert asyncio.get_running_loop().time() < deadline, (letters, handled)
                await asyncio.sleep(0.05)
            await worker.stop()
        finally:
            await bus.broker.destroy()
    assert handled == ["good"], "no handler ran on the poison; the good one went through"
    reasons = {letter.message.id: letter.reason for letter in letters}
    assert set(reasons) == {"bad-time", "negative-attempt", "zero-attempt", "text-attempt"}
    assert reasons["bad-time"].error_type == "DecodeError"
    for forged in ("negative-attempt", "zero-attempt", "text-attempt"):
        assert reasons[forged].error_type == "HeaderError"
        assert "herald-attempt" in reasons[forged].error_message
    assert {r.queue for r in reasons.values()} == {"payroll.employee.created"}
    assert {r.attempts for r in reasons.values()} == {1}


async def test_herald_publishes_bunny_consumes(url: str, namespace: str) -> None:
    require_bunny()
    queue = f"{namespace}.bunny.employee.created"
    process = await asyncio.create_subprocess_exec(
        "ruby",
        str(INTEROP / "bunny_consume.rb"),
        SERVER.rstrip("/"),
        f"{namespace}.events",
        queue,
        "employee.created",
        "1",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), 60)
        assert ready.decode().strip() == "READY"
        async with herald.connect(url) as bus:
            try:
                sent = await bus.publish(
                    EmployeeCreated(guid="g1", name="Ada"), key="g1", headers={"x-trace": "abc"}
                )
                line = await asyncio.wait_for(process.stdout.readline(), 30)
            finally:
                await bus.broker.destroy()
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    seen = json.loads(line)
    assert json.loads(seen["body"]) == {"guid": "g1", "name": "Ada"}
    assert seen["routing_key"] == "employee.created"
    assert seen["content_type"] == "application/json"
    assert seen["message_id"] == sent.id
    assert seen["type"] == "employee.created"
    assert seen["delivery_mode"] == 2
    assert abs(seen["timestamp"] - sent.time.timestamp()) < 2
    headers = seen["headers"]
    assert headers["cloudEvents_id"] == sent.id
    assert headers["cloudEvents_type"] == "employee.created"
    assert headers["cloudEvents_subject"] == "g1"
    assert headers["cloudEvents_specversion"] == "1.0"
    assert "cloudEvents_datacontenttype" not in headers, "the content_type property carries it"
    assert headers["x-trace"] == "abc"
