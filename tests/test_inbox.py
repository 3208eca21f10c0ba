"""The inbox: a redelivered message has no second effect, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

import herald
from herald.brokers.memory import MemoryBroker
from herald.inbox import Inbox, InboxMiddleware
from herald.testing import Recorder

from .test_outbox import database_url


class EmployeeCreated(herald.Event, type="employee.created"):
    guid: str


class Boom(Exception):
    pass


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url(request.param, tmp_path))
    yield engine
    await engine.dispose()


@pytest.fixture
def token() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
async def inbox(engine: AsyncEngine, token: str) -> AsyncIterator[Inbox]:
    inbox = Inbox(f"t{token}_inbox")
    sa.Table(
        f"t{token}_payroll",
        inbox.metadata,
        sa.Column("guid", sa.String(64), primary_key=True),
    )
    async with engine.begin() as conn:
        await conn.run_sync(inbox.metadata.create_all)
    yield inbox
    async with engine.begin() as conn:
        await conn.run_sync(inbox.metadata.drop_all)


def payroll(inbox: Inbox) -> sa.Table:
    return next(t for name, t in inbox.metadata.tables.items() if name.endswith("_payroll"))


async def test_redelivered_message_has_one_effect(
    engine: AsyncEngine, inbox: Inbox, token: str
) -> None:
    sessions = async_sessionmaker(engine)
    service = herald.Service("payroll")
    claims: Recorder[bool] = Recorder()

    @service.on(EmployeeCreated)
    async def open_record(event: EmployeeCreated, ctx: herald.Context) -> None:
        async with sessions() as session, session.begin():
            claimed = await inbox.claim(session, ctx)
            claims.add(claimed)
            if claimed:
                await session.execute(sa.insert(payroll(inbox)).values(guid=event.guid))

    url = f"memory://inbox-{token}"
    try:
        async with herald.connect(url) as bus:
            worker = await bus.start(service)
            message = bus.message(EmployeeCreated(guid="g1"), key="g1")
            await bus.publish(message)
            await claims.wait_for(1)
            await bus.publish(message)  # the broker delivers the same message again
            await claims.wait_for(2)
            await worker.stop()
    finally:
        MemoryBroker.reset(url.removeprefix("memory://"))
    assert claims.items == [True, False]
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(payroll(inbox).c.guid))).scalars().all()
    assert rows == ["g1"]
    assert await inbox.handled(engine, "payroll.employee.created", message.id)


async def test_a_rolled_back_claim_can_be_claimed_again(engine: AsyncEngine, inbox: Inbox) -> None:
    sessions = async_sessionmaker(engine)
    with pytest.raises(Boom):
        async with sessions() as session, session.begin():
            assert await inbox.claim_id(session, "payroll.x", "m1")
            raise Boom
    assert not await inbox.handled(engine, "payroll.x", "m1")
    async with sessions() as session, session.begin():
        assert await inbox.claim_id(session, "payroll.x", "m1")
    async with sessions() as session, session.begin():
        assert not await inbox.claim_id(session, "payroll.x", "m1")


async def test_consumers_claim_independently(engine: AsyncEngine, inbox: Inbox) -> None:
    sessions = async_sessionmaker(engine)
    async with sessions() as session, session.begin():
        assert await inbox.claim_id(session, "payroll.employee.created", "m1")
        assert await inbox.claim_id(session, "giftcards.employee.created", "m1")
        assert not await inbox.claim_id(session, "payroll.employee.created", "m1")


async def test_concurrent_claim_waits_and_loses(engine: AsyncEngine, inbox: Inbox) -> None:
    sessions = async_sessionmaker(engine)
    async with sessions() as first, sessions() as second:
        await first.begin()
        assert await inbox.claim_id(first, "payroll.x", "m1")

        async def claim_second() -> bool:
            async with second.begin():
                return await inbox.claim_id(second, "payroll.x", "m1")

        contender = asyncio.create_task(claim_second())
        done, _ = await asyncio.wait([contender], timeout=0.3)
        assert not done, "the second claim must wait for the first transaction"
        await first.commit()
        assert await asyncio.wait_for(contender, 10) is False


async def test_many_concurrent_claims_exactly_one_wins(engine: AsyncEngine, inbox: Inbox) -> None:
    sessions = async_sessionmaker(engine)

    async def claim() -> bool:
        async with sessions() as session, session.begin():
            return await inbox.claim_id(session, "payroll.x", "m-race")

    results = await asyncio.gather(*(claim() for _ in range(6)))
    assert results.count(True) == 1


async def test_prune_forgets_old_claims(engine: AsyncEngine, inbox: Inbox) -> None:
    sessions = async_sessionmaker(engine)
    async with sessions() as session, session.begin():
        for n in range(3):
            assert await inbox.claim_id(session, "payroll.x", f"m{n}")
    assert await inbox.prune(engine, older_than=timedelta(days=7)) == 0
    assert await inbox.prune(engine, older_than=timedelta(0)) == 3
    async with sessions() as session, session.begin():
        assert await inbox.claim_id(session, "payroll.x", "m0")


async def test_inbox_middleware_runs_each_message_once_and_commits_with_the_effect(
    engine: AsyncEngine, inbox: Inbox, token: str
) -> None:

    table = payroll(inbox)
    calls: Recorder[str] = Recorder()
    service = herald.Service(f"payroll-{token}", middleware=[InboxMiddleware(inbox, engine)])

    @service.on(EmployeeCreated)
    async def open_record(event: EmployeeCreated, ctx: herald.Context) -> None:
        calls.add(event.guid)
        await Inbox.session(ctx).execute(sa.insert(table).values(guid=event.guid))
        if event.guid == "fails-once" and ctx.attempt == 1:
            raise Boom("the effect rolls back with the claim")

    url = f"memory://inbox-{token}"
    async with herald.connect(url) as bus:
        worker = await bus.start(service)
        first = await bus.publish(EmployeeCreated(guid="g1"))
        await bus.publish(first)  # the same message again: a redelivery
        await bus.publish(EmployeeCreated(guid="fails-once"))
        await calls.wait_for(3)
        await asyncio.sleep(0.3)
        await worker.stop()
    assert sorted(calls.items) == ["fails-once", "fails-once", "g1"]
    async with engine.connect() as conn:
        rows = sorted((await conn.execute(sa.select(table.c.guid))).scalars())
    assert rows == ["fails-once", "g1"]
    assert await inbox.handled(engine, f"payroll-{token}.employee.created", first.id)


async def test_inbox_middleware_forgets_claims_past_retention(
    engine: AsyncEngine, inbox: Inbox, token: str
) -> None:

    async with async_sessionmaker(engine)() as session, session.begin():
        assert await inbox.claim_id(session, "old-consumer", "m-old")
    middleware = InboxMiddleware(inbox, engine, retention=timedelta(0))
    service = herald.Service(f"pruner-{token}", middleware=[middleware])
    seen: Recorder[str] = Recorder()

    @service.on(EmployeeCreated)
    async def record(event: EmployeeCreated) -> None:
        seen.add(event.guid)

    async with herald.connect(f"memory://prune-{token}") as bus:
        worker = await bus.start(service)
        await bus.publish(EmployeeCreated(guid="g"))
        await seen.wait_for(1)
        await worker.stop()
    for _ in range(100):
        if not await inbox.handled(engine, "old-consumer", "m-old"):
            break
        await asyncio.sleep(0.02)
    assert not await inbox.handled(engine, "old-consumer", "m-old")
