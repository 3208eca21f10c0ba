"""Request/reply over RabbitMQ's direct reply-to (``ReplyCapable``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiormq
import pydantic
import pytest
from aiormq.abc import AbstractConnection
from pamqp import commands as spec

import herald
from herald.broker import Prefetch, Subscription
from herald.brokers import broker_from_url
from herald.brokers.amqp import AMQPBroker
from herald.brokers.amqp.replies import DirectReplyTransport
from herald.brokers.amqp.topology import DIRECT_REPLY_TO
from herald.capabilities import ReplyCapable
from herald.errors import ConnectionLostError, HeaderError
from herald.message import Message
from herald.replies import ReplyChannel
from herald.schedule import SCHEDULER_QUEUE

from .support import close_connections_of, next_of, publish_raw

pytestmark = pytest.mark.amqp


class Lookup(herald.Event, type="rpcdirect.lookup"):
    guid: str


class Person(pydantic.BaseModel):
    guid: str
    name: str
    reply_to: str


def directory() -> herald.Service:
    service = herald.Service("rpcdirect")

    @service.rpc(Lookup)
    async def lookup(request: Lookup, ctx: herald.Context) -> Person:
        if request.guid == "nobody":
            raise herald.NotFound(f"no person {request.guid}")
        if request.guid == "crash":
            raise KeyError("crashed")
        reply_to = ctx.message.headers["herald-reply-to"]
        return Person(guid=request.guid, name="Ada", reply_to=reply_to)

    return service


@pytest.fixture
async def bus(url: str) -> AsyncIterator[herald.Bus]:
    async with herald.connect(url) as bus:
        try:
            yield bus
        finally:
            await bus.broker.destroy()


async def call(channel: ReplyChannel, guid: str, timeout: float = 10) -> Person:
    """A call through a reply channel of the test's own (the bus keeps its own private)."""
    request = Message(
        type="rpc.rpcdirect.lookup", body=Lookup(guid=guid).model_dump_json().encode()
    )
    reply = await channel.call(request, timeout)
    return Person.model_validate_json(reply.body)


def transport_of(channel: ReplyChannel) -> DirectReplyTransport:
    assert isinstance(channel.transport, DirectReplyTransport)
    return channel.transport


def declared_subscriptions(broker: herald.Broker) -> list[Subscription]:
    """Record every subscription ``broker`` is asked to declare from now on."""
    seen: list[Subscription] = []
    original = broker.declare

    async def declare(subscription: Subscription) -> None:
        seen.append(subscription)
        await original(subscription)

    broker.declare = declare  # type: ignore[method-assign]
    return seen


async def test_round_trip_uses_direct_reply_to_without_a_queue(bus: herald.Bus) -> None:
    assert isinstance(bus.broker, ReplyCapable)
    declared = declared_subscriptions(bus.broker)
    worker = await bus.start(directory())
    person = await bus.request(Lookup(guid="g1"), Person, timeout=10)
    assert (person.guid, person.name) == ("g1", "Ada")
    assert person.reply_to.startswith(f"{DIRECT_REPLY_TO}."), (
        "the server sees RabbitMQ's per-channel name, not the literal pseudo-queue"
    )
    assert bus.broker.is_reply_address(person.reply_to)
    services = [s.service for s in declared if s.queue != SCHEDULER_QUEUE]
    assert services == ["rpcdirect"], "no reply queue is declared"
    await worker.stop()


async def test_errors_come_back_typed(bus: herald.Bus) -> None:
    worker = await bus.start(directory())
    with pytest.raises(herald.NotFound, match="no person nobody"):
        await bus.request(Lookup(guid="nobody"), Person, timeout=10)
    with pytest.raises(herald.RemoteError) as info:
        await bus.request(Lookup(guid="crash"), Person, timeout=10)
    assert info.value.error_type == "KeyError"
    assert (await bus.request(Lookup(guid="ok"), Person, timeout=10)).guid == "ok"
    await worker.stop()


async def test_fifty_concurrent_calls_on_one_channel(bus: herald.Bus) -> None:
    worker = await bus.start(directory())
    replies = ReplyChannel(bus.broker)
    try:
        guids = [f"g{i}" for i in range(50)]
        people = await asyncio.gather(*(call(replies, guid, 20) for guid in guids))
        assert [p.guid for p in people] == guids
        assert transport_of(replies).channels_opened == 1
    finally:
        await replies.close()
    await worker.stop()


async def test_call_after_the_server_closed_the_connection(bus: herald.Bus, namespace: str) -> None:
    worker = await bus.start(directory())
    replies = ReplyChannel(bus.broker)
    try:
        assert (await call(replies, "before")).guid == "before"
        assert await close_connections_of(namespace) >= 1
        assert (await call(replies, "after", 30)).guid == "after"
        assert transport_of(replies).channels_opened == 2, "consumed again on a new channel"
    finally:
        await replies.close()
    await worker.stop()


async def test_a_deleted_exchange_is_declared_again(
    bus: herald.Bus, raw: AbstractConnection, namespace: str
) -> None:
    worker = await bus.start(directory())
    replies = ReplyChannel(bus.broker)
    try:
        assert (await call(replies, "before")).guid == "before"
        channel = await raw.channel()
        await channel.exchange_delete(f"{namespace}.events")
        await channel.close()
        assert (await call(replies, "after")).guid == "after"
        assert transport_of(replies).channels_opened == 2
    finally:
        await replies.close()
    await worker.stop()


async def test_a_closed_transport_sends_nothing(broker: AMQPBroker) -> None:
    transport = broker.reply_transport()
    replies: list[Message] = []
    await transport.start(replies.append)
    await transport.close()
    with pytest.raises(ConnectionLostError, match="closed"):
        await transport.send(Message(type="rpcdirect.lookup", body=b"{}"))
    assert transport.channels_opened == 1


async def test_wire_maps_reply_to_and_replies_go_to_the_default_exchange(
    broker: AMQPBroker, raw: AbstractConnection
) -> None:
    sub = Subscription("wiresvc", "rpc.wire.ask")
    await broker.declare(sub)
    channel = await raw.channel()
    got: asyncio.Queue[aiormq.abc.DeliveredMessage] = asyncio.Queue()
    await channel.basic_consume(DIRECT_REPLY_TO, got.put, no_ack=True)
    props = spec.Basic.Properties(
        reply_to=DIRECT_REPLY_TO, headers={"cloudEvents_type": "rpc.wire.ask"}
    )
    await channel.basic_publish(
        b"{}", exchange=broker.topology.exchange, routing_key="rpc.wire.ask", properties=props
    )
    stream = broker.consume(sub, Prefetch(10))
    delivery = await next_of(stream)
    reply_to = delivery.message.headers["herald-reply-to"]
    assert reply_to.startswith(f"{DIRECT_REPLY_TO}.") and broker.is_reply_address(reply_to)
    await delivery.ack()
    await stream.aclose()

    reply = Message(type="herald.reply", body=b'{"ok": 1}', headers={"k": "v"})
    await broker.send_reply(reply_to, reply)
    delivered = await asyncio.wait_for(got.get(), 10)
    assert delivered.body == b'{"ok": 1}'
    assert isinstance(delivered.delivery, spec.Basic.Deliver)
    assert delivered.delivery.exchange == ""
    headers = delivered.header.properties.headers or {}
    assert headers["cloudEvents_type"] == "herald.reply" and headers["k"] == "v"
    await channel.close()


async def test_a_forged_reply_address_picks_no_destination(
    url: str, raw: AbstractConnection, namespace: str
) -> None:
    victim = Subscription("victim", "job.created")
    async with herald.connect(url) as bus:
        try:
            await bus.broker.declare(victim)
            worker = await bus.start(directory())
            for forged in (f"{namespace}.victim.job.created", f"{DIRECT_REPLY_TO} x"):
                await publish_raw(
                    raw,
                    f"{namespace}.events",
                    "rpc.rpcdirect.lookup",
                    b'{"guid": "g1"}',
                    reply_to=forged,
                    headers={"herald-reply-to": forged, "herald-correlation-id": "c1"},
                )
            deadline = asyncio.get_running_loop().time() + 10
            while len(letters := await bus.dead_letters("rpcdirect")) < 2:
                assert asyncio.get_running_loop().time() < deadline, "not dead-lettered"
                await asyncio.sleep(0.05)
            assert {dl.reason.error_type for dl in letters} == {"HeaderError"}
            [stats] = await bus.inspect_queues([victim.queue])
            assert stats.depth == 0, "no reply was published into the victim's queue"
            with pytest.raises(HeaderError):
                await bus.broker.send_reply(  # type: ignore[attr-defined]
                    f"{namespace}.victim.job.created", Message(type="herald.reply", body=b"")
                )
            await worker.stop()
        finally:
            await bus.broker.destroy()


async def test_a_fresh_broker_is_reply_capable(url: str) -> None:
    broker = broker_from_url(url)
    assert isinstance(broker, ReplyCapable)
    assert not broker.is_reply_address(DIRECT_REPLY_TO)


async def test_durable_false_requests_are_transient(bus: herald.Bus) -> None:
    worker = await bus.start(directory())
    try:
        await bus.request(Lookup(guid="warm"), Person, timeout=10)  # opens the channel
        assert bus._replies is not None
        transport = transport_of(bus._replies)
        modes: list[int | None] = []
        publish = transport._publish

        async def spy(channel: Any, request: Message, properties: spec.Basic.Properties) -> None:
            modes.append(properties.delivery_mode)
            await publish(channel, request, properties)

        transport._publish = spy  # type: ignore[method-assign]
        fast = await bus.request(Lookup(guid="g2"), Person, timeout=10, durable=False)
        kept = await bus.request(Lookup(guid="g3"), Person, timeout=10)
        assert (fast.guid, kept.guid) == ("g2", "g3")
        assert modes == [1, 2], "durable=False: transient (no disk write); default persistent"
    finally:
        await worker.stop()
