"""Request/reply: answers, typed errors, timeouts, and the reply channel's lifetime."""

from __future__ import annotations

import asyncio
import time

import pydantic

from ...context import Context
from ...errors import TimeoutError as HeraldTimeoutError
from ...event import Event
from ...rpc import ExpectedError, RemoteError
from ...service import Service
from ..environment import Environment

__all__ = [
    "Missing",
    "Square",
    "SquareReply",
    "maths_service",
    "reply_channel_is_removed_on_close",
    "request_errors_come_back_typed",
    "request_reply",
]


class Square(Event, type="conformance.square"):
    n: int


class SquareReply(pydantic.BaseModel):
    value: int
    handled_by: str


class Missing(ExpectedError):
    """A declared error of the conformance suite's RPC service."""


def maths_service(env: Environment, calls: list[int] | None = None) -> Service:
    service = Service(env.service_name("maths"))

    @service.rpc(Square)
    async def square(request: Square, ctx: Context) -> SquareReply:
        if calls is not None:
            calls.append(request.n)
        if request.n == 404:
            raise Missing(f"no square for {request.n}", n=request.n)
        if request.n == 500:
            raise ZeroDivisionError("boom")
        if request.n == 408:
            await asyncio.sleep(5)
        return SquareReply(value=request.n * request.n, handled_by=ctx.service)

    return service


async def request_reply(env: Environment) -> None:
    service = maths_service(env)
    async with env.connect() as bus:
        worker = await bus.start(service)
        replies = await asyncio.gather(
            *(bus.request(Square(n=n), SquareReply, timeout=20) for n in range(20))
        )
        await worker.stop()
    assert [r.value for r in replies] == [n * n for n in range(20)]
    assert {r.handled_by for r in replies} == {service.name}


async def request_errors_come_back_typed(env: Environment) -> None:
    service = maths_service(env)
    async with env.connect() as bus:
        worker = await bus.start(service)
        try:
            await bus.request(Square(n=404), SquareReply, timeout=20)
        except Missing as exc:
            assert exc.message == "no square for 404" and exc.data == {"n": 404}
        else:
            raise AssertionError("a declared error is raised again on the caller")
        try:
            await bus.request(Square(n=500), SquareReply, timeout=20)
        except RemoteError as exc:
            assert (exc.error_type, exc.message) == ("ZeroDivisionError", "boom")
        else:
            raise AssertionError("a handler crash comes back as RemoteError")
        try:
            await bus.request(Square(n=408), SquareReply, timeout=0.5)
        except HeraldTimeoutError as exc:
            assert "conformance.square" in str(exc) and "0.5s" in str(exc)
        else:
            raise AssertionError("no reply in time raises herald.TimeoutError")
        ok = await bus.request(Square(n=3), SquareReply, timeout=20)
        assert ok.value == 9, "the bus keeps working after a timeout"
        await worker.stop(timeout=0.2)


async def reply_channel_is_removed_on_close(env: Environment) -> None:
    """A bus's reply channel leaves nothing behind on the broker once it closed."""
    service = maths_service(env)
    async with env.connect() as bus:
        worker = await bus.start(service)
        before = {stats.queue for stats in await bus.inspect_queues()}
        async with env.connect() as caller:
            for n in range(5):
                assert (await caller.request(Square(n=n), SquareReply, timeout=20)).value == n * n
        deadline = time.monotonic() + 10
        while (after := {stats.queue for stats in await bus.inspect_queues()}) != before:
            if time.monotonic() > deadline:
                raise AssertionError(f"left behind: {sorted(after - before)}")
            await asyncio.sleep(0.1)
        await worker.stop()
