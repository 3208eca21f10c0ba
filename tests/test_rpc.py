"""Request/reply details beyond the conformance scenarios (run on memory://)."""

from __future__ import annotations

import uuid

import pydantic
import pytest

import herald


class Lookup(herald.Event, type="directory.lookup"):
    guid: str
    limit: int = 1


class Person(pydantic.BaseModel):
    guid: str
    name: str


directory = herald.Service("directory")


@directory.rpc(Lookup)
async def lookup(request: Lookup) -> Person:
    if request.guid == "nobody":
        raise herald.NotFound(f"no person {request.guid}")
    return Person(guid=request.guid, name="Ada")


async def test_invalid_request_is_answered_with_the_field_named() -> None:
    url = f"memory://rpc-{uuid.uuid4().hex[:8]}"
    async with herald.connect(url) as bus:
        worker = await bus.start(directory)
        bad = herald.Message(type="directory.lookup", body=b'{"guid": "g", "limit": "many"}')
        with pytest.raises(herald.Invalid) as info:
            await bus.request(bad, Person, timeout=5)
        assert "limit" in info.value.fields
        with pytest.raises(herald.NotFound, match="no person nobody"):
            await bus.request(Lookup(guid="nobody"), Person)
        await worker.stop()


async def test_one_reply_queue_per_bus_removed_on_close() -> None:
    name = f"rpc-{uuid.uuid4().hex[:8]}"
    async with herald.connect(f"memory://{name}") as bus:
        worker = await bus.start(directory)
        for i in range(25):
            assert (await bus.request(Lookup(guid=f"g{i}"), Person)).guid == f"g{i}"
        reply_queues = [s.queue for s in await bus.inspect_queues() if s.queue.startswith("reply-")]
        assert len(reply_queues) == 1, "calls share the bus's reply queue"
        await worker.stop()
    async with herald.connect(f"memory://{name}") as bus:
        assert [s.queue for s in await bus.inspect_queues()] == ["directory.rpc.directory.lookup"]


def test_rpc_registration_rejects_non_events() -> None:
    service = herald.Service("bad-rpc")
    with pytest.raises(herald.ConfigurationError, match="takes an Event subclass"):
        service.rpc(Person)  # type: ignore[arg-type]


def test_expected_errors_register_by_code() -> None:
    class Conflict(herald.ExpectedError):
        code = "employees.Conflict"

    assert herald.ExpectedError.registry["employees.Conflict"] is Conflict
    restored = Conflict.from_dict(Conflict("taken", guid="g1").to_dict())
    assert isinstance(restored, Conflict) and restored.data == {"guid": "g1"}


async def test_prepare_requests_opens_the_reply_queue_before_the_first_request() -> None:
    async with herald.connect(f"memory://rpc-{uuid.uuid4().hex[:8]}") as bus:

        async def reply_queues() -> list[str]:
            return [s.queue for s in await bus.inspect_queues() if s.queue.startswith("reply-")]

        assert await reply_queues() == []
        await bus.prepare_requests()
        opened = await reply_queues()
        assert len(opened) == 1
        worker = await bus.start(directory)
        assert (await bus.request(Lookup(guid="g1"), Person)).guid == "g1"
        assert await reply_queues() == opened, "the first request uses the queue opened"
        await worker.stop()
