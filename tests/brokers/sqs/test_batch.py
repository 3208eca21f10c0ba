"""Batched SQS calls, without a server: a later change of a message's visibility
supersedes one not sent yet, so concurrent calls cannot apply them out of order."""

from __future__ import annotations

import asyncio
from typing import Any

from herald.brokers.sqs.batch import BATCH, Batcher
from herald.errors import ErrorTable
from herald.testing import eventually


class Calls:
    """A batch call that records its entries and answers every one as done."""

    def __init__(self) -> None:
        self.sent: list[list[dict[str, Any]]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.sent.append(entries)
        await self.gate.wait()
        return {}


def change(receipt: str, seconds: int) -> dict[str, Any]:
    return {"ReceiptHandle": receipt, "VisibilityTimeout": seconds}


async def test_a_release_supersedes_an_extension_not_sent_yet() -> None:
    """A heartbeat extends a dozen held messages; one of them is released in the same
    turn: the extension would go in a call sent concurrently with the release's and
    could be applied after it, leaving the message invisible a whole timeout."""
    calls = Calls()
    batcher = Batcher(calls, "changing visibility", ErrorTable([]))
    extensions = [
        asyncio.create_task(batcher.submit(change(f"r{i}", 30), key=f"r{i}"))
        for i in range(BATCH + 2)
    ]
    await asyncio.sleep(0)  # the heartbeat's submissions are in, not sent
    release = asyncio.create_task(batcher.submit(change("r11", 0), key="r11"))
    await asyncio.wait_for(asyncio.gather(*extensions, release), 5)
    sent = [entry for call in calls.sent for entry in call]
    assert [e["VisibilityTimeout"] for e in sent if e["ReceiptHandle"] == "r11"] == [0]
    assert len(sent) == BATCH + 2


async def test_a_change_after_one_in_flight_waits_for_the_next_call() -> None:
    calls = Calls()
    calls.gate.clear()
    batcher = Batcher(calls, "changing visibility", ErrorTable([]))
    extension = asyncio.create_task(batcher.submit(change("r", 30), key="r"))
    await eventually(lambda: bool(calls.sent), 5, "the first call", interval=0)
    release = asyncio.create_task(batcher.submit(change("r", 0), key="r"))
    await asyncio.sleep(0.01)
    assert len(calls.sent) == 1, "sent alongside the call in flight"
    assert not extension.done(), "an entry in flight was taken as sent"
    calls.gate.set()
    await asyncio.wait_for(asyncio.gather(extension, release), 5)
    assert [call[0]["VisibilityTimeout"] for call in calls.sent] == [30, 0]
