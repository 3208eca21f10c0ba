"""Replicas of one service starting at the same moment: each declares the queue and
joins its group while the others do; every declaration succeeds and no event
published after the first declaration returned is lost (see
:func:`herald.brokers.kafka.history.claim_start`)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError

from herald.broker import Prefetch, Subscription
from herald.brokers import broker_from_url
from herald.brokers.kafka import KafkaBroker
from herald.brokers.kafka.history import claim_start
from herald.message import Message

from .server import TANSU_SESSION_TIMEOUT, kafka_url, shared_tansu

pytestmark = pytest.mark.kafka

REPLICAS = 4
EVENTS = 40


@pytest.fixture
async def url() -> AsyncIterator[str]:
    url = kafka_url(f"r{uuid.uuid4().hex[:10]}", partitions=4)
    yield url
    async with broker_from_url(url) as broker:
        await broker.destroy()


async def test_replicas_declaring_and_consuming_at_once_all_start_and_lose_nothing(
    url: str,
) -> None:
    """All replicas find the group new; the first commits its start offsets and
    consumes while the others, slower (another process, a busy core), are still
    between finding the group new and committing: they must keep the first's
    offsets, not fail on the group's membership nor move its offsets."""
    sub = Subscription("replicas", "test.item")
    sent = [Message(type="test.item", body=f"{i}".encode(), subject=f"k{i}") for i in range(EVENTS)]
    received: set[bytes] = set()
    consuming, everything = asyncio.Event(), asyncio.Event()
    declared: asyncio.Queue[int] = asyncio.Queue()
    found_new: list[bool] = []

    async def replica(number: int, broker: KafkaBroker) -> None:
        await broker.declare(sub)
        declared.put_nowait(number)
        async with contextlib.aclosing(broker.consume(sub, Prefetch(10))) as stream:
            async for delivery in stream:
                consuming.set()
                received.add(delivery.message.body)
                await delivery.ack()
                if len(received) == EVENTS:
                    everything.set()

    brokers = [KafkaBroker.from_url(url) for _ in range(REPLICAS + 1)]
    for broker in brokers:
        await broker.connect()
    publisher, first, slower = brokers[0], brokers[1], brokers[2:]
    for broker in slower:
        queues = broker._parts().consumer
        describe = queues._describe

        async def late(topics: list[str], describe: Any = describe) -> list[dict[str, Any]]:
            found_new.append(not consuming.is_set())
            await asyncio.wait_for(consuming.wait(), 30)
            result: list[dict[str, Any]] = await describe(topics)
            return result

        queues._describe = late  # type: ignore[method-assign]
    tasks = [asyncio.create_task(replica(n, b)) for n, b in enumerate([first, *slower])]

    async def watch(step: asyncio.Future[Any]) -> None:
        await asyncio.wait([step, *tasks], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        failed = [t.exception() for t in tasks if t.done()]
        assert not failed, f"a replica failed to start: {failed!r}"
        assert step.done(), "timed out"

    try:
        await watch(asyncio.ensure_future(declared.get()))
        await publisher.publish(sent[: EVENTS // 2])  # the first is joining, the others declaring
        for _ in slower:
            await watch(asyncio.ensure_future(declared.get()))
        await publisher.publish(sent[EVENTS // 2 :])
        await watch(asyncio.ensure_future(everything.wait()))
        assert found_new == [True] * len(slower), "the slower ones did not find the group new"
        assert received == {m.body for m in sent}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for broker in brokers:
            await broker.close()


async def test_a_claim_refused_by_a_joined_group_waits_for_its_mark_and_keeps_it() -> None:
    """The narrow race: the mark is missing when read, a member joins before the
    commit. The refused claim retries; once the mark is there it commits nothing."""
    bootstrap, name = shared_tansu().bootstrap, f"claim{uuid.uuid4().hex[:10]}"
    mark = TopicPartition(name, 0)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": name,
        "enable_auto_commit": False,
        "session_timeout_ms": TANSU_SESSION_TIMEOUT,
        "heartbeat_interval_ms": TANSU_SESSION_TIMEOUT // 3,
    }
    member, probe = AIOKafkaConsumer(**options), AIOKafkaConsumer(**options)
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
        await member.start()
        member.subscribe([name])
        async with asyncio.timeout(30):
            while not member.assignment():
                await member.getmany(timeout_ms=100)
        await probe.start()
        probe.assign([mark])
        with pytest.raises(CommitFailedError):
            await claim_start(probe, mark, {}, patience=0.3)
        claim = asyncio.create_task(claim_start(probe, mark, {}, patience=30))
        await asyncio.sleep(0.3)
        assert not claim.done(), "claimed a group that has a member"
        await member.commit({mark: 7})
        assert await asyncio.wait_for(claim, 30) is False
        assert await probe.committed(mark) == 7, "the member's offset was overwritten"
    finally:
        await probe.stop()
        await member.stop()
        with contextlib.suppress(Exception):
            await admin.delete_topics([name])
        await admin.close()
