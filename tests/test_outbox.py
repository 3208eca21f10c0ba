"""The transactional outbox and its relay, on a SQLite file and on PostgreSQL.

Events are consumed from a real ``memory://`` broker; outages use a broker with an
off switch that wraps it. To know that nothing more was published than expected,
tests publish a sentinel straight to the broker and read the queue up to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

import herald
import herald.inbox
import herald.outbox
from herald.broker import Broker, Delivery, Prefetch, ProgressCallback, Subscription
from herald.brokers.memory import MemoryBroker
from herald.deadletter import DeadLetter
from herald.errors import ConnectionLostError
from herald.outbox import Outbox, OutboxRelay
from herald.testing import eventually

from .examples import python_blocks, run_example
from .servers import require_port

POSTGRES_URL = os.environ.get(
    "HERALD_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
DOCS = Path(__file__).resolve().parent.parent / "docs" / "outbox.md"
SUBSCRIPTION = Subscription("payroll", "employees", ("employee.*",))


class EmployeeCreated(herald.Event, type="employee.created"):
    guid: str
    n: int = 0


class Boom(Exception):
    pass


def require_postgres() -> None:
    """Fail in CI, skip on a laptop, when PostgreSQL is not running."""
    require_port(make_url(POSTGRES_URL).port or 5432, "PostgreSQL")


def database_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/app.db"
    require_postgres()
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url(request.param, tmp_path)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def token() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
async def outbox(engine: AsyncEngine, token: str) -> AsyncIterator[Outbox]:
    outbox = Outbox(f"t{token}_outbox", source="employees")
    sa.Table(
        f"t{token}_employees",
        outbox.metadata,
        sa.Column("guid", sa.String(64), primary_key=True),
    )
    async with engine.begin() as conn:
        await conn.run_sync(outbox.metadata.create_all)
    yield outbox
    async with engine.begin() as conn:
        await conn.run_sync(outbox.metadata.drop_all)


@pytest.fixture
async def broker(token: str) -> AsyncIterator[Switchable]:
    inner = MemoryBroker(f"outbox-{token}")
    await inner.connect()
    await inner.declare(SUBSCRIPTION)
    yield Switchable(inner)
    await inner.close()
    MemoryBroker.reset(inner.name)


class Switchable(Broker):
    """A real ``memory://`` broker with an off switch: while ``down`` (or once
    ``allow`` publishes were used up) every publish fails with ConnectionLostError."""

    features = MemoryBroker.features
    schemes = ("memory",)

    @classmethod
    def from_url(cls, url: str) -> Switchable:
        raise NotImplementedError("built by the fixture")

    def __init__(self, inner: MemoryBroker, *, allow: int | None = None) -> None:
        self.inner = inner
        self.down = False
        self.allow = allow
        self.refused = 0

    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    async def _publish(self, messages: Sequence[herald.Message]) -> None:
        if self.allow is not None:
            if self.allow <= 0:
                self.down = True
            self.allow -= 1
        if self.down:
            self.refused += 1
            raise ConnectionLostError("broker switched off")
        await self.inner.publish(messages)

    async def declare(self, subscription: Subscription) -> None:
        await self.inner.declare(subscription)

    def consume(self, subscription: Subscription, prefetch: Prefetch) -> AsyncIterator[Delivery]:  # type: ignore[override]
        return self.inner.consume(subscription, prefetch)

    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        return await self.inner.dead_letters(service, limit)

    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        return await self.inner.replay_dead_letters(service, ids, progress)

    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        return await self.inner.purge_dead_letters(service, ids)


async def received(broker: Switchable, timeout: float = 10.0) -> list[herald.Message]:
    """Everything published to the queue so far, read up to a fresh sentinel."""
    sentinel = herald.Message(type="employee.sentinel", body=b"{}")
    await broker.inner.publish([sentinel])
    messages: list[herald.Message] = []
    deliveries = broker.inner.consume(SUBSCRIPTION, Prefetch(10_000))
    try:
        async with asyncio.timeout(timeout):
            async for delivery in deliveries:
                await delivery.ack()
                if delivery.message.id == sentinel.id:
                    return messages
                messages.append(delivery.message)
    finally:
        await deliveries.aclose()
    raise AssertionError("unreachable")


def employees(outbox: Outbox) -> sa.Table:
    return next(t for name, t in outbox.metadata.tables.items() if name.endswith("_employees"))


async def hire(
    engine: AsyncEngine, outbox: Outbox, guids: Sequence[str], *, n: int = 0, fail: bool = False
) -> list[herald.Message]:
    """One transaction: insert employee rows and stage one event per row."""
    sessions = async_sessionmaker(engine)
    staged = []
    async with sessions() as session, session.begin():
        for guid in guids:
            await session.execute(sa.insert(employees(outbox)).values(guid=f"{guid}-{n}"))
            staged.append(await outbox.stage(session, EmployeeCreated(guid=guid, n=n), key=guid))
        if fail:
            raise Boom
    return staged


async def pending(engine: AsyncEngine, outbox: Outbox) -> int:
    return await outbox.pending(engine)


async def wait_pending(
    engine: AsyncEngine, outbox: Outbox, count: int, timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while (left := await outbox.pending(engine)) != count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{left} rows pending after {timeout}s, expected {count}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(relay.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def ids(messages: Sequence[herald.Message]) -> list[str]:
    return [m.id for m in messages]


async def test_only_committed_transactions_publish(
    engine: AsyncEngine, outbox: Outbox, broker: Switchable
) -> None:
    sessions = async_sessionmaker(engine)
    async with sessions() as session, session.begin():
        await session.execute(sa.insert(employees(outbox)).values(guid="g1"))
        staged = await outbox.stage(session, EmployeeCreated(guid="g1"), key="g1")
        assert await outbox.pending(session) == 1
        assert await pending(engine, outbox) == 0  # not visible before commit
    with pytest.raises(Boom):
        await hire(engine, outbox, ["g2"], fail=True)
    assert await pending(engine, outbox) == 1

    assert await OutboxRelay(engine, broker, outbox).drain() == 1
    got = await received(broker)
    assert ids(got) == [staged.id]
    assert herald.default_codecs.decode(got[0].body, got[0].datacontenttype, EmployeeCreated) == (
        EmployeeCreated(guid="g1")
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(employees(outbox).c.guid))).scalars().all()
    assert rows == ["g1"]
    assert await pending(engine, outbox) == 0
    assert await OutboxRelay(engine, broker, outbox).drain() == 0


async def test_staged_envelope_is_published_unchanged(
    engine: AsyncEngine, outbox: Outbox, broker: Switchable
) -> None:
    original = herald.Message(
        type="employee.created",
        body=b'{"guid":"g9","n":3}',
        source="hr",
        headers={"x-trace": "t-1", "herald-causation-id": "c-7"},
    )
    sessions = async_sessionmaker(engine)
    async with sessions() as session, session.begin():
        staged = await outbox.stage(session, original, key="g9", headers={"x-extra": "1"})
        typed = await outbox.stage(session, EmployeeCreated(guid="g10"))
    assert staged.id == original.id and staged.subject == "g9"
    assert typed.source == "employees" and typed.subject is None
    await OutboxRelay(engine, broker, outbox).drain()
    got = await received(broker)
    assert got == [staged, typed]
    assert got[0].headers == {"x-trace": "t-1", "herald-causation-id": "c-7", "x-extra": "1"}
    assert got[0].time == original.time


async def test_order_is_kept_across_keys_and_batches(
    engine: AsyncEngine, outbox: Outbox, broker: Switchable
) -> None:
    staged: list[herald.Message] = []
    keys = [f"k{i}" for i in range(20)]
    for n in range(30):
        staged += await hire(engine, outbox, keys[n % 3 :: 3], n=n)
        sessions = async_sessionmaker(engine)
        async with sessions() as session, session.begin():
            staged += await outbox.stage_many(
                session, [(EmployeeCreated(guid=k, n=100 + n), k) for k in keys[:4]]
            )
    relay = OutboxRelay(engine, broker, outbox, batch_size=64)
    assert await relay.drain() == len(staged) == relay.published
    assert ids(await received(broker)) == ids(staged)


async def test_concurrent_writers_keep_per_key_order(
    engine: AsyncEngine, outbox: Outbox, broker: Switchable
) -> None:
    async def writer(w: int) -> list[herald.Message]:
        staged = []
        for n in range(15):
            staged += await hire(engine, outbox, [f"w{w}-k{k}" for k in range(3)], n=n)
        return staged

    relay = OutboxRelay(engine, broker, outbox, batch_size=16, poll_interval=0.05)
    async with running(relay):
        results = await asyncio.gather(*(writer(w) for w in range(4)))
        await wait_pending(engine, outbox, 0)
    got = await received(broker)
    assert sorted(ids(got)) == sorted(m.id for staged in results for m in staged)
    for staged in results:
        for key in {m.subject for m in staged}:
            assert [m.id for m in got if m.subject == key] == [
                m.id for m in staged if m.subject == key
            ]


async def test_writes_succeed_while_broker_is_down_then_backlog_drains(
    engine: AsyncEngine, outbox: Outbox, broker: Switchable, caplog: pytest.LogCaptureFixture
) -> None:
    broker.down = True
    relay = OutboxRelay(engine, broker, outbox, batch_size=8, poll_interval=0.05, max_backoff=0.05)
    with caplog.at_level(logging.INFO, logger="herald.outbox"):
        async with running(relay):
            staged: list[herald.Message] = []
            for n in range(10):
                staged += await hire(engine, outbox, ["a", "b", "c"], n=n)
            await eventually(lambda: broker.refused >= 3, what="relay retrying")
            assert await pending(engine, outbox) == 30
            assert relay.published == 0
            broker.down = False
            await eventually(lambda: "caught up on 30 events" in caplog.text, what="the backlog")
    assert await pending(engine, outbox) == 0
    assert ids(await received(broker)) == ids(staged)
    assert "retrying the same batch" in caplog.text
    assert "publishing again after" in caplog.text


async def test_restarted_relay_resumes_where_the_last_one_stopped(
    engine: AsyncEngine, outbox: Outbox, broker: Switchable, db_url: str
) -> None:
    staged = []
    for n in range(10):
        staged += await hire(engine, outbox, [f"k{k}" for k in range(10)], n=n)
    broker.allow = 3
    first = OutboxRelay(engine, broker, outbox, batch_size=10, poll_interval=0.05, max_backoff=0.05)
    async with running(first):
        await eventually(lambda: broker.refused >= 2, what="the broker to fail")
    assert first.published == 30
    assert await pending(engine, outbox) == 70

    other_process = create_async_engine(db_url)
    try:
        healthy = Switchable(broker.inner)
        second = OutboxRelay(other_process, healthy, outbox, batch_size=10)
        assert await second.drain(timeout=5) == 70
    finally:
        await other_process.dispose()
    assert ids(await received(broker)) == ids(staged)


async def test_stopping_after_a_publish_marks_it_first(
    engine: AsyncEngine, outbox: Outbox, broker: Switchable
) -> None:
    staged = await hire(engine, outbox, ["a", "b", "c"])
    relay = OutboxRelay(engine, StopsAfterPublish(broker.inner), outbox)
    task = asyncio.create_task(relay.run())
    StopsAfterPublish.task = task
    with pytest.raises(asyncio.CancelledError):
        await task
    assert relay.published == 3
    assert await pending(engine, outbox) == 0
    assert await OutboxRelay(engine, broker, outbox).drain(timeout=1) == 0
    assert ids(await received(broker)) == ids(staged)


class StopsAfterPublish(Switchable):
    """Cancels the relay's task the moment the broker confirmed a publish."""

    task: asyncio.Task[None] | None = None

    async def publish(self, messages: Sequence[herald.Message]) -> None:
        await super().publish(messages)
        assert self.task is not None
        self.task.cancel()


async def test_two_relays_never_double_publish(
    engine: AsyncEngine, outbox: Outbox, broker: Switchable, db_url: str
) -> None:
    engines = [create_async_engine(db_url) for _ in range(2)]
    relays = [
        OutboxRelay(e, broker, outbox, batch_size=7, poll_interval=0.02, lease_ttl=3, name=f"r{i}")
        for i, e in enumerate(engines)
    ]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:
        staged = []
        for n in range(40):
            staged += await hire(engine, outbox, ["a", "b", "c", "d", "e"], n=n)
        await wait_pending(engine, outbox, 0)
        assert ids(await received(broker)) == ids(staged)
        await eventually(lambda: sum(r.published for r in relays) == len(staged), what="counts")
        assert [r.active for r in relays].count(True) == 1

        leader = next(i for i, r in enumerate(relays) if r.active)
        tasks[leader].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[leader]
        more = []
        for n in range(40, 45):
            more += await hire(engine, outbox, ["a", "b"], n=n)
        await wait_pending(engine, outbox, 0, timeout=10)
        assert relays[1 - leader].active
        assert ids(await received(broker)) == ids(more)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for e in engines:
            await e.dispose()


async def test_lease_of_a_crashed_relay_expires(
    engine: AsyncEngine, outbox: Outbox, broker: Switchable
) -> None:
    staged = await hire(engine, outbox, ["a", "b"])
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(outbox.lease_table).values(
                name=outbox.name, holder="crashed", expires_at=time.time() + 1.5
            )
        )
    relay = OutboxRelay(engine, broker, outbox, poll_interval=0.05)
    with pytest.raises(herald.TimeoutError):
        await relay.drain(timeout=0.2)
    assert relay.published == 0 and not relay.active
    started = time.monotonic()
    assert await relay.drain(timeout=10) == 2
    assert time.monotonic() - started > 0.5
    assert ids(await received(broker)) == ids(staged)


async def test_keep_sent_marks_rows_and_prune_removes_them(
    engine: AsyncEngine, outbox: Outbox, broker: Switchable
) -> None:
    await hire(engine, outbox, ["a", "b", "c"])
    relay = OutboxRelay(engine, broker, outbox, keep_sent=True)
    assert await relay.drain() == 3
    assert await relay.drain() == 0
    assert await pending(engine, outbox) == 0
    async with engine.connect() as conn:
        sent = await conn.execute(sa.select(outbox.table.c.sent_at))
        assert all(value is not None for value in sent.scalars())
    assert await outbox.prune(engine, older_than=timedelta(hours=1)) == 0
    assert await outbox.prune(engine, older_than=timedelta(0)) == 3
    assert len(await received(broker)) == 3


async def test_commit_wakes_the_relay(
    engine: AsyncEngine, outbox: Outbox, broker: Switchable
) -> None:
    relay = OutboxRelay(engine, broker, outbox, poll_interval=60)
    async with running(relay):
        await eventually(lambda: relay.active, what="the relay to take the lease")
        staged = await hire(engine, outbox, ["a"])
        await eventually(lambda: relay.published == 1, timeout=5, what="a woken relay")
    assert ids(await received(broker)) == ids(staged)


async def test_relay_retries_database_errors(
    engine: AsyncEngine, token: str, broker: Switchable, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox(f"t{token}_late")
    relay = OutboxRelay(engine, broker, outbox, poll_interval=0.05, max_backoff=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger="herald.outbox"):
            async with running(relay):
                await eventually(lambda: "database error" in caplog.text, what="a logged error")
                await outbox.create(engine)
                async with async_sessionmaker(engine)() as session, session.begin():
                    staged = await outbox.stage(session, EmployeeCreated(guid="x"))
                await eventually(lambda: relay.published == 1, what="the relay to recover")
        assert ids(await received(broker)) == [staged.id]
    finally:
        await outbox.drop(engine)


@pytest.mark.parametrize("module", [herald.outbox, herald.inbox])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0, result


@pytest.mark.parametrize("index", range(len(python_blocks(DOCS))))
def test_docs_examples_run(index: int, tmp_path: Path) -> None:
    run_example(python_blocks(DOCS)[index], tmp_path)


async def test_stage_refuses_an_event_over_the_size_limit(
    engine: AsyncEngine, outbox: Outbox
) -> None:
    small = Outbox(outbox.table.name, metadata=sa.MetaData(), max_message_bytes=100)
    sessions = async_sessionmaker(engine)
    async with sessions() as session, session.begin():
        with pytest.raises(herald.MessageTooLargeError, match="accepts at most 100"):
            await small.stage(session, EmployeeCreated(guid="x" * 200, n=0))
    assert await outbox.pending(engine) == 0


class Small(Switchable):
    """A broker that takes bodies of at most 40 bytes."""

    features = herald.Features(persistent=False, multi_process=False, max_message_bytes=40)


async def test_an_event_the_broker_refuses_for_good_does_not_block_the_rest(
    engine: AsyncEngine, outbox: Outbox, broker: Switchable, caplog: pytest.LogCaptureFixture
) -> None:
    small = Small(broker.inner)
    first = await hire(engine, outbox, ["a"])
    huge = await hire(engine, outbox, ["b" * 50])
    last = await hire(engine, outbox, ["c"])
    with caplog.at_level(logging.ERROR, logger="herald.outbox"):
        async with running(OutboxRelay(engine, small, outbox, poll_interval=0.05)):
            await wait_pending(engine, outbox, 0)
    assert ids(await received(broker)) == ids(first + last)
    refused = await outbox.refused(engine)
    assert [m.id for m, _ in refused] == ids(huge)
    assert "accepts at most 40" in refused[0][1]
    assert any(huge[0].id in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
