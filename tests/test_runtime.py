"""The service runtime on the in-process broker: what the conformance suite does not cover."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import pytest

import herald
from herald.brokers.memory import MemoryBroker
from herald.brokers.memory.delivery import MemoryDelivery
from herald.testing import Recorder, eventually


class Tick(herald.Event, type="runtime.tick"):
    n: int


def memory_url() -> str:
    return f"memory://runtime-{uuid.uuid4().hex[:8]}"


async def test_concurrency_is_bounded() -> None:
    service = herald.Service("bounded", concurrency=3)
    running = 0
    peak = 0
    done: Recorder[int] = Recorder()

    @service.on(Tick)
    async def handle(event: Tick, ctx: herald.Context) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        done.add(event.n)

    async with herald.connect(memory_url()) as bus:
        worker = await bus.start(service)
        await bus.publish_many(Tick(n=n) for n in range(40))
        await done.wait_for(40)
        await worker.stop()
    assert peak == 3


async def test_single_argument_handlers_and_pattern_handlers() -> None:
    service = herald.Service("shapes")
    typed: Recorder[Tick] = Recorder()
    raw: Recorder[herald.Message] = Recorder()

    @service.on(Tick)
    async def only_event(event: Tick) -> None:
        typed.add(event)

    @service.on("runtime.#")
    async def everything(message: herald.Message, ctx: herald.Context) -> None:
        raw.add(message)

    assert [h.subscription.queue for h in service.handlers] == [
        "shapes.runtime.tick",
        "shapes.runtime.#",
    ]
    async with herald.connect(memory_url()) as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=1), key="k")
        await typed.wait_for(1)
        await raw.wait_for(1)
        await worker.stop()
    assert typed.items == [Tick(n=1)]
    assert raw.items[0].subject == "k" and raw.items[0].type == "runtime.tick"


async def test_handler_timeout_counts_as_a_failure() -> None:
    service = herald.Service(
        "slowpoke", retry=herald.RetryPolicy(attempts=2, initial_delay=0.01, jitter=0)
    )
    calls: Recorder[int] = Recorder()

    @service.on(Tick, timeout=0.05)
    async def slow(event: Tick, ctx: herald.Context) -> None:
        calls.add(ctx.attempt)
        await asyncio.sleep(5)

    async with herald.connect(memory_url()) as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=1))
        await calls.wait_for(2)
        await eventually(lambda: worker.handled >= 2)
        letters = await bus.dead_letters("slowpoke")
        await worker.stop()
    assert calls.items == [1, 2]
    assert len(letters) == 1 and letters[0].reason.error_type == "TimeoutError"


async def test_context_publish_links_follow_up_events() -> None:
    service = herald.Service("relay")
    listener = herald.Service("listener")
    got: Recorder[herald.Message] = Recorder()

    @service.on(Tick)
    async def forward(event: Tick, ctx: herald.Context) -> None:
        if event.n == 1:
            await ctx.publish(Tick(n=2), key="next")

    @listener.on(Tick)
    async def listen(event: Tick, ctx: herald.Context) -> None:
        got.add(ctx.message)

    async with herald.connect(memory_url()) as bus:
        workers = [await bus.start(service), await bus.start(listener)]
        first = await bus.publish(Tick(n=1))
        await got.wait_for(2)
        for worker in workers:
            await worker.stop()
    follow_up = next(m for m in got.items if m.subject == "next")
    assert follow_up.headers["herald-causation-id"] == first.id


async def test_serve_shuts_down_gracefully_on_sigterm() -> None:
    service = herald.Service("signalled")
    finished: Recorder[int] = Recorder()
    started = asyncio.Event()

    @service.on(Tick)
    async def slow(event: Tick, ctx: herald.Context) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.add(event.n)

    async with herald.connect(memory_url()) as bus:
        serving = asyncio.create_task(bus.serve(service))

        async def consuming() -> bool:
            return [s.consumers for s in await bus.inspect_queues()] == [1]

        await eventually(consuming, what="the service consuming")
        await bus.publish(Tick(n=1))
        await started.wait()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(serving, 10)
    assert finished.items == [1], "the in-flight handler finished before serve() returned"


def test_registration_errors_are_clear() -> None:
    service = herald.Service("reg")
    with pytest.raises(herald.ConfigurationError, match="must be an async function"):
        service.on(Tick)(lambda event: None)  # type: ignore[arg-type,return-value]

    @service.on(Tick)
    async def first(event: Tick) -> None: ...

    with pytest.raises(herald.ConfigurationError, match="already has a handler on queue"):

        @service.on(Tick)
        async def second(event: Tick) -> None: ...

    with pytest.raises(herald.ConfigurationError, match=r"must take \(event\) or \(event, ctx\)"):

        @service.on(Tick, name="other")
        async def third() -> None: ...

    with pytest.raises(herald.ConfigurationError, match="invalid service name"):
        herald.Service("pay.roll")
    with pytest.raises(herald.ConfigurationError, match="Event subclass or a pattern"):
        service.on(42)  # type: ignore[arg-type]


async def test_publishing_a_non_event_is_a_type_error() -> None:
    async with herald.connect(memory_url()) as bus:
        with pytest.raises(TypeError, match=r"herald\.Event or herald\.Message"):
            await bus.publish({"n": 1})  # type: ignore[arg-type]


async def test_closed_memory_broker_refuses_publishes() -> None:
    broker = MemoryBroker("closed-test")
    await broker.connect()
    await broker.close()
    with pytest.raises(herald.BrokerError, match="closed"):
        await broker.publish([herald.Message(type="a.b", body=b"")])


async def test_pattern_handlers_decode_by_type_and_poison_is_dead_lettered() -> None:
    service = herald.Service("lifecycle")
    seen: Recorder[Tick] = Recorder()

    @service.on("runtime.*", name="all")
    async def any_tick(message: herald.Message, ctx: herald.Context) -> None:
        seen.add(ctx.decode(Tick))

    async with herald.connect(memory_url()) as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=3), key="k")
        await bus.publish(herald.Message(type="runtime.tick", body=b'{"n": "three"}'))
        await seen.wait_for(1)
        await eventually(lambda: worker.handled >= 2)
        letters = await bus.dead_letters("lifecycle")
        await worker.stop()
    assert seen.items == [Tick(n=3)]
    assert [dl.reason.error_type for dl in letters] == ["ValidationError"]
    assert letters[0].reason.attempts == 1


async def test_a_waiting_ack_holds_no_runner_but_holds_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An ack that waits for the broker (as on Redis) is parked: the one runner goes on
    to the next keyless delivery; the next delivery of a key waits for the ack."""
    reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    acked = MemoryDelivery._ack

    async def ack_after_reply(self: MemoryDelivery) -> None:
        await reply
        await acked(self)

    monkeypatch.setattr(MemoryDelivery, "_ack", ack_after_reply)
    service = herald.Service("parked", concurrency=1)
    seen: Recorder[int] = Recorder()

    @service.on(Tick)
    async def handle(event: Tick) -> None:
        seen.add(event.n)

    async with herald.connect(memory_url()) as bus:
        worker = await bus.start(service)
        await bus.publish_many([Tick(n=1), Tick(n=2), Tick(n=3)])
        await seen.wait_for(3)
        await bus.publish(Tick(n=10), key="k")
        await bus.publish(Tick(n=11), key="k")
        await seen.wait_for(4)
        await asyncio.sleep(0.05)
        assert seen.items == [1, 2, 3, 10]  # 11 waits for 10's ack
        assert worker.handled == 0
        reply.set_result(None)
        await seen.wait_for(5)
        await eventually(lambda: worker.handled == 5)
        await worker.stop()
