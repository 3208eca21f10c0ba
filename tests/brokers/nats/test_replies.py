"""Request/reply on ``nats://`` through core NATS inboxes (no JetStream for replies)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import nats
import pydantic
import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NATSTimeoutError

import herald
from herald.brokers.nats import NATSBroker
from herald.brokers.nats_names import consumer_name
from herald.brokers.nats_replies import InboxReplyTransport, is_inbox
from herald.errors import PublishError
from herald.message import Message
from herald.rpc import CORRELATION_ID, STATUS, QueueReplyTransport, ReplyChannel, request_type

from ...servers import IN_CI, port_open

pytestmark = pytest.mark.nats


class Double(herald.Event, type="natsrpc.double"):
    n: int


class Doubled(pydantic.BaseModel):
    value: int


class TooBig(herald.ExpectedError):
    """A declared error of this file's service."""


calc = herald.Service("calc")


@calc.rpc(Double)
async def double(request: Double) -> Doubled:
    if request.n > 1000:
        raise TooBig(f"{request.n} is too big", limit=1000)
    if request.n < 0:
        raise ArithmeticError("negative")
    return Doubled(value=2 * request.n)


def require_nats() -> None:
    if port_open(4222):
        return
    if IN_CI:
        pytest.fail("NATS not reachable on 127.0.0.1:4222 (CI=true: brokers must be running)")
    pytest.skip("NATS not reachable on 127.0.0.1:4222")


def nats_url() -> str:
    return f"nats://127.0.0.1:4222/?namespace=tr{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def bus() -> AsyncIterator[herald.Bus]:
    require_nats()
    async with herald.connect(nats_url()) as made:
        try:
            yield made
        finally:
            assert isinstance(made.broker, NATSBroker)
            await made.broker.destroy()


def transport_of(bus: herald.Bus) -> InboxReplyTransport:
    channel = bus._replies
    assert channel is not None, "the bus has made a request"
    assert isinstance(channel.transport, InboxReplyTransport)
    return channel.transport


async def consumers_of(broker: NATSBroker) -> dict[str, set[str]]:
    """Every stream of the broker's namespace with the names of its consumers."""
    js = broker._require()
    found: dict[str, set[str]] = {}
    for info in await js.streams_info():
        if info.config.name in broker.names.streams.all():
            consumers = await js.consumers_info(info.config.name)
            found[info.config.name] = {c.name for c in consumers}
    return found


async def test_round_trip_and_typed_errors_over_an_inbox(bus: herald.Bus) -> None:
    worker = await bus.start(calc)
    assert (await bus.request(Double(n=21), Doubled, timeout=10)).value == 42
    transport = transport_of(bus)
    assert is_inbox(transport.address) and transport.address.startswith("_INBOX.")
    with pytest.raises(TooBig) as info:
        await bus.request(Double(n=5000), Doubled, timeout=10)
    assert (info.value.message, info.value.data) == ("5000 is too big", {"limit": 1000})
    with pytest.raises(herald.RemoteError) as remote:
        await bus.request(Double(n=-1), Doubled, timeout=10)
    assert (remote.value.error_type, remote.value.message) == ("ArithmeticError", "negative")
    assert remote.value.service == "calc"
    await worker.stop()


async def test_fifty_concurrent_calls_share_one_inbox(bus: herald.Bus) -> None:
    worker = await bus.start(calc)
    replies = await asyncio.gather(
        *(bus.request(Double(n=n), Doubled, timeout=20) for n in range(50))
    )
    assert [r.value for r in replies] == [2 * n for n in range(50)]
    nc = bus.broker._client()  # type: ignore[attr-defined]
    address = transport_of(bus).address
    assert [s.subject for s in nc._subs.values()].count(address) == 1
    await worker.stop()


async def test_replies_create_no_stream_or_consumer(bus: herald.Bus) -> None:
    broker = bus.broker
    assert isinstance(broker, NATSBroker)
    worker = await bus.start(calc)
    for n in range(5):
        assert (await bus.request(Double(n=n), Doubled, timeout=10)).value == 2 * n
    served = consumer_name(f"calc.{request_type('natsrpc.double')}")
    expected = {name: {served} for name in broker.names.streams.all()[:2]}
    expected[broker.names.streams.dlq] = set()
    assert await consumers_of(broker) == expected
    # the check would see the generic transport's queue: it is one more consumer
    generic = QueueReplyTransport(broker)
    await generic.start(lambda reply: None)
    try:
        events = (await consumers_of(broker))[broker.names.streams.events]
        assert len(events) == 2 and served in events
    finally:
        await generic.close()
    await worker.stop()


async def test_generic_transport_still_works_through_send_reply_fallback(
    bus: herald.Bus,
) -> None:
    worker = await bus.start(calc)
    channel = ReplyChannel(bus.broker)
    await channel.transport.close()
    channel.transport = QueueReplyTransport(bus.broker)
    bus._replies = channel
    assert not is_inbox(channel.transport.address)
    assert (await bus.request(Double(n=8), Doubled, timeout=10)).value == 16
    await worker.stop()


async def test_close_unsubscribes_the_inbox(bus: herald.Bus) -> None:
    worker = await bus.start(calc)
    assert (await bus.request(Double(n=1), Doubled, timeout=10)).value == 2
    address = transport_of(bus).address
    probe = await nats.connect("nats://127.0.0.1:4222")
    try:
        with pytest.raises(NATSTimeoutError):  # someone listens, nobody answers
            await probe.request(address, b"", timeout=0.3)
        assert bus._replies is not None
        await bus._replies.close()
        bus._replies = None
        with pytest.raises(NoRespondersError):  # the server knows no subscriber
            await probe.request(address, b"", timeout=2)
    finally:
        await probe.close()
    await worker.stop()


async def test_reply_reaches_an_inbox_with_its_headers(bus: herald.Bus) -> None:
    broker = bus.broker
    assert isinstance(broker, NATSBroker)
    received: asyncio.Queue[Message] = asyncio.Queue()
    transport = broker.reply_transport()
    await transport.start(received.put_nowait)
    try:
        reply = Message(
            type="herald.reply",
            body=b'{"value": 1}',
            source="calc",
            headers={CORRELATION_ID: "c-1", STATUS: "error", "note": " two\nlines "},
        )
        await broker.send_reply(transport.address, reply)
        got = await asyncio.wait_for(received.get(), 5)
        assert (got.body, got.source, got.id) == (reply.body, "calc", reply.id)
        assert got.headers == reply.headers
        huge = Message(type="herald.reply", body=b"x" * (broker.features.max_message_bytes + 1))
        with pytest.raises(PublishError, match="bytes"):
            await broker.send_reply(transport.address, huge)
    finally:
        await transport.close()


async def test_calls_work_after_the_callers_connection_drops() -> None:
    require_nats()
    url = nats_url()
    async with herald.connect(url) as server, herald.connect(url) as caller:
        try:
            worker = await server.start(calc)
            assert (await caller.request(Double(n=2), Doubled, timeout=10)).value == 4
            address = transport_of(caller).address
            nc = caller.broker._client()  # type: ignore[attr-defined]
            before = nc.stats["reconnects"]
            nc._transport._io_writer.transport.abort()  # the socket dies under the client
            deadline = time.monotonic() + 15
            while not (nc.stats["reconnects"] > before and nc.is_connected):
                assert time.monotonic() < deadline, "the client did not reconnect"
                await asyncio.sleep(0.05)
            assert (await caller.request(Double(n=3), Doubled, timeout=10)).value == 6
            assert transport_of(caller).address == address, "same inbox, subscribed again"
            await worker.stop()
        finally:
            assert isinstance(server.broker, NATSBroker)
            await server.broker.destroy()


async def test_inbox_follows_the_broker_onto_a_new_connection() -> None:
    require_nats()
    url = nats_url()
    async with herald.connect(url) as server, herald.connect(url) as caller:
        try:
            worker = await server.start(calc)
            assert (await caller.request(Double(n=4), Doubled, timeout=10)).value == 8
            address = transport_of(caller).address
            await caller.broker.close()
            await caller.broker.connect()
            assert (await caller.request(Double(n=5), Doubled, timeout=10)).value == 10
            nc = caller.broker._client()  # type: ignore[attr-defined]
            assert [s.subject for s in nc._subs.values()].count(address) == 1
            await worker.stop()
        finally:
            assert isinstance(server.broker, NATSBroker)
            await server.broker.destroy()
