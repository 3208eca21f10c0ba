"""Publishing and routing: pub/sub, fan-out, late and offline subscribers, sizes, volume."""

from __future__ import annotations

import asyncio
import os

from ...context import Context
from ...errors import MessageTooLargeError
from ...message import Message
from ...service import Service
from ..environment import Environment
from ..events import Blob, Tick
from ..recorder import Recorder
from .common import MiB, publish_ticks, tick_service

__all__ = [
    "fan_out_to_three_services",
    "large_message",
    "late_subscriber_gets_events_after_its_queue_exists",
    "offline_subscriber_catches_up",
    "oversized_message_is_refused",
    "publish_subscribe",
    "publish_without_subscriber_is_dropped_by_routing",
    "stream_of_ten_thousand",
]


async def publish_subscribe(env: Environment) -> None:
    seen: Recorder[Message] = Recorder()
    service = Service(env.service_name("pubsub"))

    @service.on(Tick)
    async def record(event: Tick, ctx: Context) -> None:
        seen.add(ctx.message)

    async with env.connect() as bus:
        worker = await bus.start(service)
        sent = await bus.publish(Tick(n=1), key="k1", headers={"x-note": "kept"})
        (got,) = await seen.wait_for(1)
        await worker.stop()
    assert (got.id, got.type, got.subject, got.source) == (sent.id, sent.type, "k1", sent.source)
    assert got.headers["x-note"] == "kept" and got.body == sent.body
    assert got.time == sent.time and got.datacontenttype == sent.datacontenttype


async def publish_without_subscriber_is_dropped_by_routing(env: Environment) -> None:
    seen: Recorder[int] = Recorder()
    async with env.connect() as bus:
        await bus.publish(Tick(n=1))  # no queue is bound: not an error, and not kept
        worker = await bus.start(tick_service(env, "unrouted", seen))
        await bus.publish(Tick(n=2))
        await seen.wait_for(1)
        await asyncio.sleep(0.3)
        await worker.stop()
    assert seen.items == [2], f"only the event published after the queue existed: {seen.items}"


async def fan_out_to_three_services(env: Environment) -> None:
    recorders = [Recorder[int]() for _ in range(3)]
    async with env.connect() as bus:
        workers = [
            await bus.start(tick_service(env, f"fan{i}", rec)) for i, rec in enumerate(recorders)
        ]
        await bus.publish_many(Tick(n=n) for n in range(100))
        for rec in recorders:
            await rec.wait_for(100)
        await asyncio.sleep(0.2)
        for worker in workers:
            await worker.stop()
    for rec in recorders:
        assert sorted(rec.items) == list(range(100)), "each service gets each event once"


async def late_subscriber_gets_events_after_its_queue_exists(env: Environment) -> None:
    early: Recorder[int] = Recorder()
    late: Recorder[int] = Recorder()
    async with env.connect() as bus:
        first = await bus.start(tick_service(env, "early", early))
        await bus.publish_many(Tick(n=n) for n in (1, 2, 3))
        await early.wait_for(3)
        second = await bus.start(tick_service(env, "late", late))
        await bus.publish(Tick(n=4))
        await early.wait_for(4)
        await late.wait_for(1)
        await asyncio.sleep(0.3)
        await first.stop()
        await second.stop()
    assert late.items == [4], f"late subscriber saw {late.items}, expected only [4]"
    assert sorted(early.items) == [1, 2, 3, 4], "the running service was not disturbed"


async def offline_subscriber_catches_up(env: Environment) -> None:
    seen: Recorder[int] = Recorder()
    service = tick_service(env, "offline", seen)
    async with env.connect() as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=0))
        await seen.wait_for(1)
        await worker.stop()
    await publish_ticks(env, range(1, 51))
    async with env.connect() as bus:
        worker = await bus.start(service)
        await seen.wait_for(51)
        await asyncio.sleep(0.2)
        await worker.stop()
    assert sorted(seen.items) == list(range(51))


async def large_message(env: Environment) -> None:
    """A body of exactly 1 MiB arrives intact."""
    received: Recorder[Message] = Recorder()
    service = Service(env.service_name("large"))

    @service.on("conformance.blob")
    async def take(message: Message, ctx: Context) -> None:
        received.add(message)

    data = os.urandom(MiB // 2).hex()[: MiB - len('{"data":""}')]  # a body of exactly 1 MiB
    async with env.connect() as bus:
        worker = await bus.start(service)
        sent = await bus.publish(Blob(data=data))
        assert len(sent.body) == MiB
        (message,) = await received.wait_for(1, timeout=30)
        await worker.stop()
    assert message.body == sent.body


async def oversized_message_is_refused(env: Environment) -> None:
    """One byte over the broker's declared limit is refused with a reason, and nothing
    of the batch is published."""
    features = await env.features()
    limit = features.max_message_bytes
    seen: Recorder[int] = Recorder()
    async with env.connect() as bus:
        worker = await bus.start(tick_service(env, "oversized", seen))
        too_big = Message(type="conformance.tick", body=b"x" * (limit + 1))
        try:
            await bus.send([Message(type="conformance.tick", body=b'{"n": 1}'), too_big])
        except MessageTooLargeError as exc:
            assert exc.size == limit + 1 and exc.limit == limit
            assert str(limit + 1) in str(exc).replace(",", "")
        else:
            raise AssertionError("an oversized message must be refused, not dropped")
        await bus.publish(Tick(n=2))
        await seen.wait_for(1)
        await asyncio.sleep(0.3)
        await worker.stop()
    assert seen.items == [2], "the batch with the oversized message was not published at all"


async def stream_of_ten_thousand(env: Environment) -> None:
    seen: Recorder[int] = Recorder()
    async with env.connect() as bus:
        worker = await bus.start(tick_service(env, "stream", seen, concurrency=32))
        for start in range(0, 10_000, 500):
            await bus.publish_many(Tick(n=n) for n in range(start, start + 500))
        await seen.wait_for(10_000, timeout=270)
        await worker.stop()
    assert sorted(seen.items) == list(range(10_000)), "each event exactly once"
