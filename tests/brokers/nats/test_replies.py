"""Request/reply on ``nats://`` through core NATS inboxes (no JetStream for replies),
and the reply addresses a request may carry."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pydantic
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NATSTimeoutError

import herald
from herald.brokers.nats import NATSBroker
from herald.errors import HeaderError, MessageTooLargeError
from herald.headers import CORRELATION_ID, DEADLINE, REPLY_STATUS, REPLY_TO
from herald.message import Message
from herald.replies import QueueReplyTransport
from herald.rpc import request_type
from herald.schedule import SCHEDULER_QUEUE
from herald.testing import eventually

from .support import Relay, nats_url, require_nats

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


REQUESTS = request_type("natsrpc.double")
SERVED = f"calc.{REQUESTS}"


def nats_of(bus: herald.Bus) -> NATSBroker:
    assert isinstance(bus.broker, NATSBroker)
    return bus.broker


class Wire:
    """A plain client watching subjects: what was published where, and with what."""

    def __init__(self, raw: Client) -> None:
        self._raw = raw
        self.seen: list[Msg] = []

    async def watch(self, *subjects: str) -> None:
        for subject in subjects:
            await self._raw.subscribe(subject, cb=self._record)
        await self._raw.flush()

    async def _record(self, msg: Msg) -> None:
        self.seen.append(msg)

    def reply_addresses(self) -> set[str]:
        return {(m.headers or {}).get(REPLY_TO, "") for m in self.seen}


async def test_round_trip_and_typed_errors_over_an_inbox(bus: herald.Bus, raw: Client) -> None:
    wire = Wire(raw)
    await wire.watch(nats_of(bus).names.event_subject(REQUESTS))
    worker = await bus.start(calc)
    assert (await bus.request(Double(n=21), Doubled, timeout=10)).value == 42
    (address,) = wire.reply_addresses()
    assert address.startswith("_INBOX.") and nats_of(bus).is_reply_address(address)
    with pytest.raises(TooBig) as info:
        await bus.request(Double(n=5000), Doubled, timeout=10)
    assert (info.value.message, info.value.data) == ("5000 is too big", {"limit": 1000})
    with pytest.raises(herald.RemoteError) as remote:
        await bus.request(Double(n=-1), Doubled, timeout=10)
    assert (remote.value.error_type, remote.value.message) == ("ArithmeticError", "negative")
    assert remote.value.service == "calc"
    await worker.stop()


async def test_fifty_concurrent_calls_share_one_inbox(bus: herald.Bus, raw: Client) -> None:
    wire = Wire(raw)
    await wire.watch(nats_of(bus).names.event_subject(REQUESTS))
    worker = await bus.start(calc)
    replies = await asyncio.gather(
        *(bus.request(Double(n=n), Doubled, timeout=20) for n in range(50))
    )
    assert [r.value for r in replies] == [2 * n for n in range(50)]
    await eventually(lambda: len(wire.seen) == 50, 20, "the requests on the wire")
    assert len(wire.reply_addresses()) == 1
    await worker.stop()


async def test_replies_create_no_stream_or_consumer(bus: herald.Bus, raw: Client) -> None:
    broker = nats_of(bus)
    worker = await bus.start(calc)
    for n in range(5):
        assert (await bus.request(Double(n=n), Doubled, timeout=10)).value == 2 * n
    queues = [s.queue for s in await broker.inspect_queues()]
    assert [q for q in queues if q != SCHEDULER_QUEUE] == [SERVED], "no queue for replies"
    streams = {info.config.name for info in await raw.jetstream().streams_info()}
    ours = {name for name in streams if name.startswith(broker.names.streams.events)}
    assert ours == set(broker.names.streams.all()), "no stream for replies"
    await worker.stop()


async def test_the_queue_transport_works_on_nats_too(bus: herald.Bus) -> None:
    worker = await bus.start(calc)
    transport = QueueReplyTransport(bus.broker)
    replies: asyncio.Queue[Message] = asyncio.Queue()
    await transport.start(replies.put_nowait)
    try:
        request = bus.message(Double(n=8)).with_headers(
            {REPLY_TO: transport.address, CORRELATION_ID: "c-8", DEADLINE: "9999999999"}
        )
        await transport.send(Message(type=REQUESTS, body=request.body, headers=request.headers))
        reply = await asyncio.wait_for(replies.get(), 10)
        assert reply.headers[CORRELATION_ID] == "c-8" and reply.body == b'{"value":16}'
    finally:
        await transport.close()
    await worker.stop()


async def test_close_unsubscribes_the_inbox(bus: herald.Bus, raw: Client) -> None:
    transport = nats_of(bus).reply_transport()
    await transport.start(lambda reply: None)
    with pytest.raises(NATSTimeoutError):  # someone listens, nobody answers
        await raw.request(transport.address, b"", timeout=0.3)
    await transport.close()
    with pytest.raises(NoRespondersError):  # the server knows no subscriber
        await raw.request(transport.address, b"", timeout=2)


async def test_reply_reaches_an_inbox_with_its_headers(bus: herald.Bus, raw: Client) -> None:
    broker = nats_of(bus)
    received: asyncio.Queue[Message] = asyncio.Queue()
    transport = broker.reply_transport()
    await transport.start(received.put_nowait)
    try:
        reply = Message(
            type="herald.reply",
            body=b'{"value": 1}',
            source="calc",
            headers={CORRELATION_ID: "c-1", REPLY_STATUS: "error", "note": " two\nlines "},
        )
        await broker.send_reply(transport.address, reply)
        got = await asyncio.wait_for(received.get(), 5)
        assert (got.body, got.source, got.id) == (reply.body, "calc", reply.id)
        assert got.headers == reply.headers
        huge = Message(type="herald.reply", body=b"x" * raw.max_payload)
        with pytest.raises(MessageTooLargeError):
            await broker.send_reply(transport.address, huge)
        await broker.send_reply(transport.address, reply)  # still connected
        assert (await asyncio.wait_for(received.get(), 5)).id == reply.id
    finally:
        await transport.close()


FORGED = [
    "employee.deleted",
    "_INBOX.x\r\nPUB employee.deleted 2\r\nhi",
    "_INBOX.x\nPUB employee.deleted 2",
    "_INBOX.a b",
    "_INBOX.*",
    "_INBOX.>",
    "_INBOX.ok.deeper",
    "_INBOX.",
    "_INBOX." + "a" * 65,
    "herald.reply.not-hex",
]


WATCHED = ["employee.deleted", "_INBOX.x", "_INBOX.x.>", "_INBOX.a", "_INBOX.ok.>", FORGED[-2]]
"""Concrete subjects a forged address could reach (wildcards would see the whole shared
server's inbox traffic; they are refused by the address check before any publish)."""


@pytest.mark.parametrize("address", FORGED)
def test_forged_reply_addresses_are_not_reply_addresses(address: str) -> None:
    broker = NATSBroker.from_url("nats://127.0.0.1")
    assert not broker.is_reply_address(address)
    assert broker.is_reply_address("_INBOX.u38RuAEP6CN1bqFGkLAhQd")


async def test_send_reply_checks_the_address_again(bus: herald.Bus, raw: Client) -> None:
    wire = Wire(raw)
    await wire.watch(*WATCHED, f"{nats_of(bus).names.prefix}>")
    reply = Message(type="herald.reply", body=b"{}")
    for address in FORGED:
        with pytest.raises(HeaderError, match="reply"):
            await nats_of(bus).send_reply(address, reply)
    await raw.flush()
    assert wire.seen == []


async def test_requests_with_forged_reply_addresses_are_dead_lettered(
    bus: herald.Bus, raw: Client, caplog: pytest.LogCaptureFixture
) -> None:
    broker = nats_of(bus)
    wire = Wire(raw)
    await wire.watch(*WATCHED, f"{broker.names.prefix}events.employee.>")
    caplog.set_level(logging.CRITICAL, logger="herald.worker")
    worker = await bus.start(calc)
    sent = []
    for address in FORGED:
        request = bus.message(Double(n=1))
        headers = {REPLY_TO: address, CORRELATION_ID: uuid.uuid4().hex, DEADLINE: "9999999999"}
        forged = Message(type=REQUESTS, body=request.body, headers=headers)
        sent.append(forged.id)
        await broker.publish([forged])  # CR/LF travel base64-encoded, then decoded again

    async def all_dead() -> bool:
        return len(await broker.dead_letters("calc")) == len(FORGED)

    await eventually(all_dead, 20, "every forged request to be dead-lettered")
    letters = await broker.dead_letters("calc")
    assert sorted(letter.message.id for letter in letters) == sorted(sent)
    assert {letter.reason.error_type for letter in letters} == {"HeaderError"}
    assert all("reply" in letter.reason.error_message for letter in letters)
    await raw.flush()
    assert wire.seen == [], "nothing was published at a forged address"
    await worker.stop()


async def test_calls_work_after_the_callers_connection_drops(
    relay: Relay, raw: Client, caplog: pytest.LogCaptureFixture
) -> None:
    namespace = f"tr{uuid.uuid4().hex[:8]}"
    direct = nats_url(namespace=namespace)
    relayed = nats_url(port=relay.port, namespace=namespace)
    async with herald.connect(direct) as server, herald.connect(relayed) as caller:
        try:
            wire = Wire(raw)
            await wire.watch(nats_of(server).names.event_subject(REQUESTS))
            worker = await server.start(calc)
            assert (await caller.request(Double(n=2), Doubled, timeout=10)).value == 4
            with caplog.at_level(logging.INFO, logger="herald.brokers.nats"):
                await relay.cut()
                await eventually(lambda: "disconnected" in caplog.text, 20, "the drop")
                await relay.restore()
                await eventually(lambda: "reconnected" in caplog.text, 20, "the reconnection")
            assert (await caller.request(Double(n=3), Doubled, timeout=10)).value == 6
            assert len(wire.reply_addresses()) == 1, "same inbox, subscribed again"
            await worker.stop()
        finally:
            await nats_of(server).destroy()


async def test_the_inbox_follows_the_broker_onto_a_new_connection(raw: Client) -> None:
    require_nats()
    url = nats_url()
    async with herald.connect(url) as server, herald.connect(url) as caller:
        try:
            wire = Wire(raw)
            await wire.watch(nats_of(server).names.event_subject(REQUESTS))
            worker = await server.start(calc)
            assert (await caller.request(Double(n=4), Doubled, timeout=10)).value == 8
            await caller.broker.close()
            await caller.broker.connect()
            assert (await caller.request(Double(n=5), Doubled, timeout=10)).value == 10
            assert len(wire.reply_addresses()) == 1
            await worker.stop()
        finally:
            await nats_of(server).destroy()


async def test_a_plain_nats_client_can_call_through_the_request_queue(
    bus: herald.Bus, raw: Client
) -> None:
    worker = await bus.start(calc)
    inbox = raw.new_inbox()
    replies: asyncio.Queue[Msg] = asyncio.Queue()
    await raw.subscribe(inbox, cb=replies.put)
    request = Message(
        type=REQUESTS,
        body=b'{"n": 6}',
        headers={REPLY_TO: inbox, CORRELATION_ID: "plain", DEADLINE: "9999999999"},
    )
    await nats_of(bus).publish([request])
    msg = await asyncio.wait_for(replies.get(), 10)
    assert msg.data == b'{"value":12}' and (msg.headers or {})[CORRELATION_ID] == "plain"
    await worker.stop()
