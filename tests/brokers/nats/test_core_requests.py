"""``bus.request(..., durable=False)`` on ``nats://``: core NATS requests to a queue
group, nothing stored, and a fast "no responders" failure when no service runs."""

from __future__ import annotations

import asyncio
import uuid

import pydantic
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

import herald
from herald.brokers.nats import NATSBroker

pytestmark = pytest.mark.nats


class Triple(herald.Event, type="natscore.triple"):
    n: int


class Tripled(pydantic.BaseModel):
    value: int
    served_by: str


HANDLED: list[int] = []


def tripler(name: str) -> herald.Service:
    service = herald.Service("tripler")

    @service.rpc(Triple)
    async def triple(request: Triple) -> Tripled:
        HANDLED.append(request.n)
        return Tripled(value=3 * request.n, served_by=name)

    return service


async def test_core_request_is_answered_by_one_responder_and_stored_nowhere(
    bus: herald.Bus, raw: Client
) -> None:
    broker = bus.broker
    assert isinstance(broker, NATSBroker)
    seen: list[str] = []

    async def watch(msg: Msg) -> None:
        seen.append(msg.subject)

    await raw.subscribe(f"{broker.names.prefix}>", cb=watch)
    await raw.flush()
    workers = [await bus.start(tripler("a")), await bus.start(tripler("b"))]
    HANDLED.clear()
    try:
        replies = [await bus.request(Triple(n=n), Tripled, durable=False) for n in range(6)]
        assert [r.value for r in replies] == [0, 3, 6, 9, 12, 15]
        assert sorted(HANDLED) == list(range(6))  # the queue group: one responder each
        before = await bus.inspect_queues(["tripler.rpc.natscore.triple"])
        assert before[0].depth == 0
        await raw.flush()
        requests = [s for s in seen if s.endswith("rpc.natscore.triple")]
        # six requests on the core subject (one responder each), none into JetStream
        assert requests == [f"{broker.names.prefix}requests.rpc.natscore.triple"] * 6
        durable = await bus.request(Triple(n=7), Tripled, timeout=10)
        assert durable.value == 21
    finally:
        for worker in workers:
            await worker.stop()


async def test_core_request_without_responders_fails_at_once(bus: herald.Bus) -> None:
    # a hang would end in wait_for's TimeoutError long before the call's own timeout
    with pytest.raises(herald.NoResponders, match="no responders"):
        await asyncio.wait_for(bus.request(Triple(n=1), Tripled, durable=False, timeout=60), 30)


async def test_core_request_with_a_forged_id_still_fails_fast(bus: herald.Bus) -> None:
    forged = herald.Message(type="natscore.triple", body=b'{"n": 1}', id=f"a b.{uuid.uuid4()}")
    with pytest.raises(herald.NoResponders):
        await asyncio.wait_for(bus.request(forged, Tripled, durable=False, timeout=60), 30)


async def test_durable_false_is_durable_where_there_is_no_core_path() -> None:
    service = tripler("memory")
    async with herald.connect(f"memory://core-{uuid.uuid4().hex[:8]}") as bus:
        await (await bus.start(service)).stop()  # the queue exists, nobody serves it
        pending = asyncio.create_task(bus.request(Triple(n=2), Tripled, durable=False))
        await asyncio.sleep(0.05)
        assert not pending.done()
        worker = await bus.start(service)  # the request waited in the queue
        try:
            assert (await pending).value == 6
        finally:
            await worker.stop()
