"""A worker draining on SQS: what it received and has not started goes back at once,
batched, for the other consumers; what it is handling finishes and is acked."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import herald
from herald.broker import Prefetch, Subscription
from herald.testing import eventually

from .conftest import sqs_broker
from .server import sqs_url
from .test_broker import spy

pytestmark = pytest.mark.sqs

VISIBILITY = 10


def mine(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls on the service's queue (the bus's scheduler consumes its own)."""
    return [call for call in calls if "drain_test_item" in call["QueueUrl"]]


async def test_a_draining_worker_gives_back_what_it_has_not_started_at_once(
    namespace: str,
) -> None:
    url = sqs_url(namespace, visibility=VISIBILITY)
    service = herald.Service("drain", concurrency=2)
    started: list[bytes] = []
    finish = asyncio.Event()

    @service.on("test.item")
    async def slow(message: herald.Message) -> None:
        started.append(message.body)
        await finish.wait()

    sent = [
        herald.Message(type="test.item", body=f"{i}".encode(), subject=f"k{i}") for i in range(20)
    ]
    async with herald.connect(url) as bus, sqs_broker(url) as other:
        sqs: Any = bus.broker._parts().clients.sqs  # type: ignore[attr-defined]
        changes = spy(sqs, "change_message_visibility_batch")
        receives = spy(sqs, "receive_message")
        worker = await bus.start(service)
        await bus.publish_many(sent)
        await eventually(lambda: len(started) == 2, 30, "two handlers running")
        await eventually(lambda: len(worker._ready) == len(sent) - 2, 30, "the rest prefetched")
        stopping = asyncio.create_task(worker.stop(5.0))
        drain_began = asyncio.get_running_loop().time()
        before = len(mine(changes))
        taken: list[bytes] = []

        async def take() -> None:
            async for delivery in other.consume(Subscription("drain", "test.item"), Prefetch(50)):
                taken.append(delivery.message.body)
                await delivery.ack()

        taking = asyncio.create_task(take())
        await eventually(lambda: len(taken) == len(sent) - 2, VISIBILITY - 2, "the rest, elsewhere")
        given_back_in = asyncio.get_running_loop().time() - drain_began
        polls = len(mine(receives))  # a receive is recorded as it starts
        finish.set()
        await stopping
        await asyncio.sleep(1.0)  # a running one given back would be here, a poll made
        taking.cancel()
        await asyncio.gather(taking, return_exceptions=True)
    assert sorted(taken + started) == sorted(m.body for m in sent), "each exactly once"
    assert len(mine(receives)) <= polls, "the draining consumer kept receiving"
    changes = mine(changes)[before:]
    released = [e for call in changes for e in call["Entries"] if e["VisibilityTimeout"] == 0]
    # at least the unstarted ones; more when a receive of the stopping consumer still in
    # flight took some of them again (given back at once in turn)
    assert len(released) >= len(sent) - 2
    assert len(changes) <= len(released) // 3, f"not batched: {len(changes)} calls"
    assert given_back_in < VISIBILITY / 2
