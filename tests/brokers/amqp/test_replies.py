"""Request/reply over RabbitMQ's direct reply-to (``herald.brokers.amqp_rpc``).

Needs RabbitMQ on 127.0.0.1:5672 (guest/guest): fails when CI=true and it is
missing, skips otherwise. Every test works in its own ``namespace=``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiormq
import pydantic
import pytest
from aiormq.abc import AbstractConnection
from pamqp import commands as spec

import herald
from herald.broker import Subscription
from herald.brokers import broker_from_url
from herald.brokers.amqp import AMQPBroker
from herald.brokers.amqp_rpc import DIRECT_REPLY_TO, DirectReplyTransport
from herald.message import Message

from .test_amqp_broker import SERVER, close_connections_of, next_of, require_server

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
def namespace() -> str:
    return f"tr{uuid.uuid4().hex[:10]}"


@pytest.fixture
def url(namespace: str) -> str:
    require_server()
    return f"{SERVER}?namespace={namespace}&reconnect_timeout=30"


@pytest.fixture
async def bus(url: str) -> AsyncIterator[herald.Bus]:
    async with herald.connect(url) as bus:
        try:
            yield bus
        finally:
            assert isinstance(bus.broker, AMQPBroker)
            await bus.broker.destroy()


def declared_subscriptions(broker: herald.Broker) -> list[Subscription]:
    """Record every subscription ``broker`` is asked to declare from now on."""
    seen: list[Subscription] = []
    original = broker.declare

    async def declare(subscription: Subscription) -> None:
        seen.append(subscription)
        await original(subscription)

    broker.declare = declare  # type: ignore[method-assign]
    return seen


def transport_of(bus: herald.Bus) -> DirectReplyTransport:
    replies = bus._replies
    assert replies is not None, "the bus made a request"
    assert isinstance(replies.transport, DirectReplyTransport)
    return replies.transport


async def test_round_trip_uses_direct_reply_to_without_a_queue(bus: herald.Bus) -> None:
    declared = declared_subscriptions(bus.broker)
    worker = await bus.start(directory())
    person = await bus.request(Lookup(guid="g1"), Person, timeout=10)
    assert (person.guid, person.name) == ("g1", "Ada")
    assert person.reply_to.startswith(f"{DIRECT_REPLY_TO}."), (
        "the server sees RabbitMQ's per-channel name, not the literal pseudo-queue"
    )
    transport = transport_of(bus)
    assert transport.address == DIRECT_REPLY_TO
    assert transport.channels_opened == 1
    assert [s for s in declared if not s.durable or s.name == "reply"] == [], (
        "no reply queue is declared"
    )
    assert [s.service for s in declared] == ["rpcdirect"]
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


async def test_fifty_concurrent_calls_get_their_own_replies(bus: herald.Bus) -> None:
    worker = await bus.start(directory())
    guids = [f"g{i}" for i in range(50)]
    people = await asyncio.gather(
        *(bus.request(Lookup(guid=guid), Person, timeout=20) for guid in guids)
    )
    assert [p.guid for p in people] == guids
    assert transport_of(bus).channels_opened == 1
    await worker.stop()


async def test_call_after_the_server_closed_the_connection(bus: herald.Bus, namespace: str) -> None:
    worker = await bus.start(directory())
    assert (await bus.request(Lookup(guid="before"), Person, timeout=10)).guid == "before"
    transport = transport_of(bus)
    assert await close_connections_of(namespace) >= 1
    person = await bus.request(Lookup(guid="after"), Person, timeout=30)
    assert person.guid == "after"
    assert transport.channels_opened == 2, "the transport consumed again on a new channel"
    await worker.stop()


async def test_a_deleted_exchange_is_declared_again(
    bus: herald.Bus, raw: AbstractConnection
) -> None:
    worker = await bus.start(directory())
    assert (await bus.request(Lookup(guid="before"), Person, timeout=10)).guid == "before"
    assert isinstance(bus.broker, AMQPBroker)
    channel = await raw.channel()
    await channel.exchange_delete(bus.broker.topology.exchange)
    await channel.close()
    assert (await bus.request(Lookup(guid="after"), Person, timeout=10)).guid == "after"
    assert transport_of(bus).channels_opened == 2
    await worker.stop()


async def test_close_closes_the_channel(url: str) -> None:
    broker = broker_from_url(url)
    assert isinstance(broker, AMQPBroker)
    await broker.connect()
    try:
        transport = broker.reply_transport()
        replies: list[Message] = []
        await transport.start(replies.append)
        channel = transport._channel
        assert channel is not None and not channel.is_closed
        await transport.close()
        assert channel.is_closed and transport._channel is None
    finally:
        await broker.destroy()
        await broker.close()


@pytest.fixture
async def raw() -> AsyncIterator[AbstractConnection]:
    require_server()
    connection = await aiormq.connect(SERVER)
    try:
        yield connection
    finally:
        await connection.close()


async def test_wire_maps_reply_to_and_replies_go_to_the_default_exchange(
    url: str, raw: AbstractConnection
) -> None:
    broker = broker_from_url(url)
    assert isinstance(broker, AMQPBroker)
    await broker.connect()
    try:
        sub = Subscription("wiresvc", "rpc.wire.ask")
        await broker.declare(sub)
        channel = await raw.channel()
        got: asyncio.Queue[aiormq.abc.DeliveredMessage] = asyncio.Queue()
        await channel.basic_consume(DIRECT_REPLY_TO, got.put, no_ack=True)
        request = Message(type="rpc.wire.ask", body=b"{}", headers={"herald-reply-to": "x"})
        props = spec.Basic.Properties(
            reply_to=DIRECT_REPLY_TO,
            headers={"cloudEvents_type": "rpc.wire.ask", "cloudEvents_id": request.id},
        )
        await channel.basic_publish(
            b"{}", exchange=broker.topology.exchange, routing_key="rpc.wire.ask", properties=props
        )
        stream = broker.consume(sub, 10)
        delivery = await next_of(stream)
        reply_to = delivery.message.headers["herald-reply-to"]
        assert reply_to.startswith(f"{DIRECT_REPLY_TO}.") and reply_to != DIRECT_REPLY_TO
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
    finally:
        await broker.destroy()
        await broker.close()


async def test_other_reply_addresses_fall_back_to_routing_by_type(url: str) -> None:
    broker = broker_from_url(url)
    assert isinstance(broker, AMQPBroker)
    await broker.connect()
    try:
        sub = Subscription("fallback", "herald.reply.abc")
        await broker.declare(sub)
        await broker.send_reply("herald.reply.abc", Message(type="herald.reply", body=b"r"))
        stream = broker.consume(sub, 10)
        delivery = await next_of(stream)
        assert (delivery.message.type, delivery.message.body) == ("herald.reply.abc", b"r")
        await delivery.ack()
        await stream.aclose()
    finally:
        await broker.destroy()
        await broker.close()
