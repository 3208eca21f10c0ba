"""Scheduled publishing: what is refused, Herald's scheduler across restarts, and
recurring schedules with two replicas (the conformance scenario covers every broker)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import herald
from herald.broker import SCHEDULER_SUBSCRIPTION, Broker
from herald.brokers.memory import MemoryBroker
from herald.brokers.sqlite import SQLiteBroker
from herald.inbox import Inbox, InboxMiddleware
from herald.message import Message
from herald.outbox import Outbox, OutboxRelay
from herald.schedule import NOT_BEFORE, ORIGINAL_ID, ORIGINAL_TYPE, SCHEDULED_TYPE
from herald.scheduler import Scheduler
from herald.testing import Recorder

from .examples import ROOT, python_blocks, run_example


class Reminder(herald.Event, type="reminder.due"):
    n: int


class RelayedSQLite(SQLiteBroker):
    """The embedded broker without its native due times: scheduled messages take
    Herald's scheduler queue, as on RabbitMQ, NATS, SQS and Kafka."""

    features = replace(SQLiteBroker.features, native_schedule=False)

    async def _publish_later(self, messages: Sequence[Message]) -> None:
        await Broker._publish_later(self, messages)


def reminders(name: str, seen: Recorder[int]) -> herald.Service:
    service = herald.Service(name)

    @service.on(Reminder)
    async def remember(event: Reminder) -> None:
        seen.add(event.n)

    return service


async def test_naive_times_and_both_at_and_delay_are_refused() -> None:
    async with herald.connect(f"memory://sched-{uuid.uuid4().hex}") as bus:
        with pytest.raises(ValueError, match="time-zone aware"):
            await bus.publish(Reminder(n=1), at=datetime.now())
        with pytest.raises(ValueError, match="not both"):
            await bus.publish(Reminder(n=1), at=datetime.now(UTC), delay=1)


async def test_a_time_beyond_the_brokers_horizon_is_refused_and_nothing_is_published() -> None:
    broker = MemoryBroker(f"sched-{uuid.uuid4().hex}")
    broker.features = replace(broker.features, max_schedule_delay=60.0)
    seen: Recorder[int] = Recorder()
    async with herald.Bus(broker) as bus:
        worker = await bus.start(reminders("horizon", seen))
        with pytest.raises(herald.CapabilityError, match="at most 60s ahead"):
            await bus.publish_many([Reminder(n=1), Reminder(n=2)], delay=timedelta(minutes=5))
        await bus.publish(Reminder(n=3), delay=timedelta(seconds=0.1))
        assert await seen.wait_for(1) == [3]
        await worker.stop()


async def test_an_unreadable_envelope_is_dead_lettered_with_its_reason() -> None:
    broker = MemoryBroker(f"sched-{uuid.uuid4().hex}")
    async with herald.Bus(broker) as bus, Scheduler(broker) as scheduler:
        forged = Message(
            type=SCHEDULED_TYPE,
            body=b"{}",
            headers={NOT_BEFORE: "soon", ORIGINAL_TYPE: "reminder.due", ORIGINAL_ID: "x"},
        )
        await broker.declare(SCHEDULER_SUBSCRIPTION)
        await broker._publish([forged])  # straight to the queue, as anyone could
        for _ in range(200):
            letters = await bus.dead_letters(SCHEDULER_SUBSCRIPTION.service)
            if letters:
                break
            await asyncio.sleep(0.01)
        assert [(d.message.id, d.reason.error_type) for d in letters] == [
            (forged.id, "HeaderError")
        ]
        assert NOT_BEFORE in letters[0].reason.error_message
        assert scheduler.published == 0


@pytest.mark.parametrize("broker_class", [SQLiteBroker, RelayedSQLite], ids=["native", "relayed"])
async def test_a_scheduled_event_survives_publisher_and_consumers_restarting(
    broker_class: type[SQLiteBroker], tmp_path: Path
) -> None:
    path = tmp_path / "herald.db"
    seen: Recorder[tuple[int, float]] = Recorder()
    service = herald.Service("restarts")

    @service.on(Reminder)
    async def remember(event: Reminder) -> None:
        seen.add((event.n, time.time()))

    async with herald.Bus(broker_class(path)) as bus:  # declares the queue
        await (await bus.start(service)).stop()
    async with herald.Bus(broker_class(path)) as publisher:
        sent = await publisher.publish(Reminder(n=1), delay=1.0)
        await publisher.publish(Reminder(n=2))
    async with herald.Bus(broker_class(path)) as bus:  # runs and stops (mostly before due)
        worker = await bus.start(service)
        await seen.wait_for(1)
        await worker.stop()
    async with herald.Bus(broker_class(path)) as bus:
        worker = await bus.start(service)
        await seen.wait_for(2)
        await asyncio.sleep(0.2)
        await worker.stop()
    assert [n for n, _ in seen.items] == [2, 1], "each delivered once"
    due = datetime.fromisoformat(sent.headers[NOT_BEFORE]).timestamp()
    assert seen.items[1][1] >= due, "not before it was due"


async def test_a_recurring_schedule_fires_once_per_slot_across_two_replicas(
    tmp_path: Path,
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/app.db")
    inbox = Inbox("topups_inbox")
    async with engine.begin() as conn:
        await conn.run_sync(inbox.metadata.create_all)
    handled: Recorder[tuple[int, str]] = Recorder()

    def replica(name: str) -> herald.Service:
        service = herald.Service("topups")

        @service.every(timedelta(seconds=0.4), name="topup")
        async def top_up(occurrence: herald.Occurrence) -> None:
            handled.add((occurrence.slot, name))

        return service

    middleware = [InboxMiddleware(inbox, engine)]
    url = f"sqlite:///{tmp_path}/herald.db"
    try:
        async with (
            herald.connect(url, middleware=middleware) as one,
            herald.connect(url, middleware=middleware) as two,
        ):
            workers = [await one.start(replica("one")), await two.start(replica("two"))]
            await handled.wait_for(3)
            for worker in workers:
                await worker.stop()
            await asyncio.sleep(0.2)
        async with engine.connect() as conn:
            claimed = (
                await conn.execute(sa.select(sa.func.count()).select_from(inbox.table))
            ).scalar()
    finally:
        await engine.dispose()
    slots = [slot for slot, _ in handled.items]
    assert len(slots) == len(set(slots)), f"a slot was handled twice: {handled.items}"
    assert claimed == len(slots)


async def test_missed_slots_fire_once_on_start_and_not_again_on_restart(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/app.db")
    inbox = Inbox("reports_inbox")
    async with engine.begin() as conn:
        await conn.run_sync(inbox.metadata.create_all)
    handled: Recorder[int] = Recorder()
    service = herald.Service("reports")
    # five and a half hours into hourly slots: slots 0-4 were missed, 5 is running
    anchor = datetime.now(UTC) - timedelta(hours=5, minutes=30)

    @service.every(timedelta(hours=1), name="hourly", anchor=anchor)
    async def report(occurrence: herald.Occurrence) -> None:
        handled.add(occurrence.slot)

    url = f"sqlite:///{tmp_path}/herald.db"
    try:
        for _ in range(2):  # start, stop, start again within the slot
            async with herald.connect(url, middleware=[InboxMiddleware(inbox, engine)]) as bus:
                worker = await bus.start(service)
                await handled.wait_for(1)
                await asyncio.sleep(0.3)
                await worker.stop()
    finally:
        await engine.dispose()
    assert handled.items == [5]


async def test_the_outbox_stages_scheduled_events_and_refuses_one_beyond_the_horizon(
    tmp_path: Path,
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/app.db")
    outbox = Outbox("scheduled_outbox")
    await outbox.create(engine)
    broker = MemoryBroker(f"sched-{uuid.uuid4().hex}")
    broker.features = replace(broker.features, max_schedule_delay=60.0)
    arrived: Recorder[float] = Recorder()
    service = herald.Service("outboxed")

    @service.on(Reminder)
    async def remind(event: Reminder) -> None:
        arrived.add(time.time())

    try:
        async with herald.Bus(broker) as bus:
            worker = await bus.start(service)
            async with engine.begin() as conn:
                staged = await outbox.stage(conn, Reminder(n=1), delay=timedelta(seconds=0.3))
                await outbox.stage_many(conn, [Reminder(n=2)], delay=timedelta(hours=1))
            relay = OutboxRelay(engine, bus, outbox)
            while await outbox.pending(engine):  # a batch with a refusal ends a drain
                await relay.drain()
            [when] = await arrived.wait_for(1)
            await asyncio.sleep(0.1)
            await worker.stop()
        [(refused, reason)] = await outbox.refused(engine)
    finally:
        await engine.dispose()
    assert len(arrived) == 1, "the event beyond the horizon was not published"
    assert when >= datetime.fromisoformat(staged.headers[NOT_BEFORE]).timestamp(), "not early"
    assert (refused.type, "at most 60s ahead" in reason) == ("reminder.due", True)


DOC_BLOCKS = python_blocks(ROOT / "docs" / "scheduling.md")


def test_the_scheduling_doc_has_examples() -> None:
    assert len(DOC_BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(DOC_BLOCKS)))
def test_scheduling_doc_example_runs(index: int, tmp_path: Path) -> None:
    run_example(DOC_BLOCKS[index], tmp_path)


class FollowUp(herald.Event, type="reminder.followed-up"):
    n: int


async def test_a_handler_schedules_a_follow_up_through_its_context() -> None:
    service = herald.Service("follow")
    seen: Recorder[Message] = Recorder()

    @service.on(Reminder)
    async def remind(event: Reminder, ctx: herald.Context) -> None:
        await ctx.publish(FollowUp(n=event.n), delay=timedelta(seconds=0.2))

    @service.on(FollowUp)
    async def follow(event: FollowUp, ctx: herald.Context) -> None:
        seen.add(ctx.message)

    async with herald.connect(f"memory://sched-{uuid.uuid4().hex}") as bus:
        worker = await bus.start(service)
        sent = await bus.publish(Reminder(n=7))
        [got] = await seen.wait_for(1)
        await worker.stop()
    assert got.headers["herald-causation-id"] == sent.id
    assert datetime.fromisoformat(got.headers[NOT_BEFORE]) <= datetime.now(UTC)
