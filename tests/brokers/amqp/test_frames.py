"""Publish frames packed without pamqp are byte for byte what pamqp marshals; acks
written together settle what they name."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import aiormq
import pytest
from aiormq.abc import ChannelFrame
from aiormq.exceptions import ChannelInvalidStateError
from pamqp import commands as spec
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from herald.brokers.amqp.batch import write_acks
from herald.brokers.amqp.frames import publish_frames
from herald.brokers.amqp.wire import properties_for
from herald.message import Message

from .support import SERVER, require_server

UTC = datetime.UTC


def _pamqp(channel: int, exchange: str, key: str, body: bytes, props: Any, limit: int) -> bytes:
    frames: list[Any] = [
        spec.Basic.Publish(exchange=exchange, routing_key=key),
        ContentHeader(properties=props, body_size=len(body)),
    ]
    frames += [ContentBody(body[i : i + limit]) for i in range(0, len(body), limit)]
    return ChannelFrame.marshall(channel_number=channel, frames=frames).payload


PROPERTIES = [
    spec.Basic.Properties(),
    spec.Basic.Properties(delivery_mode=2),
    spec.Basic.Properties(headers={}),
    spec.Basic.Properties(
        content_type="application/json",
        content_encoding="gzip",
        headers={"z": "last", "a": "first", "é": "ünïcode", "n": 0, "neg": -128, "t": True},
        delivery_mode=2,
        priority=9,
        correlation_id="c-1",
        reply_to="amq.rabbitmq.reply-to.g1h2AA",
        expiration="60000",
        message_id="m" * 255,
        timestamp=datetime.datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC),
        message_type="employee.created",
        user_id="guest",
        app_id="hr",
    ),
    spec.Basic.Properties(
        timestamp=datetime.datetime(2030, 5, 6, 7, 8, 9),  # naive: read as UTC
        headers={"short": 300, "minus": -30000, "huge": 2**40, "tiny": -(2**50), "f": False},
    ),
]


@pytest.mark.parametrize("props", PROPERTIES)
@pytest.mark.parametrize("body", [b"", b"{}", bytes(range(256)) * 40])
def test_frames_match_pamqp(props: spec.Basic.Properties, body: bytes) -> None:
    packed = publish_frames(7, "bus.events", "employee.created", body, props, 4096)
    assert packed == _pamqp(7, "bus.events", "employee.created", body, props, 4096)


def test_frames_of_a_herald_message_match_pamqp_and_read_back() -> None:
    message = Message(type="employee.created", body=b'{"id": 1}', subject="e-1", headers={"x": "y"})
    props = properties_for(message, attempt=3)
    packed = publish_frames(1, "", "q", message.body, props, 131072)
    assert packed == _pamqp(1, "", "q", message.body, props, 131072)
    assert packed is not None
    offset, frames = 0, list[Any]()
    while offset < len(packed):
        used, _, frame = pamqp_frame.unmarshal(packed[offset:])
        frames.append(frame)
        offset += used
    publish, header, content = frames
    assert (publish.exchange, publish.routing_key) == ("", "q")
    assert header.properties.message_id == message.id
    assert header.properties.headers["herald-attempt"] == 3
    assert content.value == message.body


@pytest.mark.parametrize(
    "props",
    [
        spec.Basic.Properties(headers={"f": 1.5}),
        spec.Basic.Properties(headers={"nested": {"a": 1}}),
        spec.Basic.Properties(headers={"mid": 40000}),  # pamqp's type for it is configurable
        spec.Basic.Properties(headers={"k" * 129: "v"}),  # pamqp truncates the key
        spec.Basic.Properties(message_id="m" * 256),  # pamqp raises
    ],
)
def test_values_left_to_pamqp(props: spec.Basic.Properties) -> None:
    assert publish_frames(1, "x", "k", b"", props, 4096) is None


def test_invalid_exchange_left_to_pamqp() -> None:
    props = spec.Basic.Properties()
    assert publish_frames(1, "bad name!", "k", b"", props, 4096) is None
    assert publish_frames(1, "x" * 128, "k", b"", props, 4096) is None


async def test_acks_written_together_settle_what_they_name() -> None:
    """A multiple ack and single acks out of order, in one write: the queue keeps
    only what none of them named; a channel being closed refuses the write."""
    require_server()
    connection = await aiormq.connect(SERVER)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(exclusive=True)
        queue = str(declared.queue)
        for n in range(6):
            await channel.basic_publish(str(n).encode(), routing_key=queue)
        received: list[int] = []
        got_all = asyncio.Event()

        async def on_message(message: Any) -> None:
            received.append(message.delivery_tag)
            if len(received) == 6:
                got_all.set()

        await channel.basic_qos(prefetch_count=10)
        ok = await channel.basic_consume(queue, on_message)
        await asyncio.wait_for(got_all.wait(), 10)
        first = received[0]
        await write_acks(channel, first + 2, [first + 5, first + 4])  # leaves first + 3
        await channel.basic_cancel(str(ok.consumer_tag))
        probe = await connection.channel()
        await asyncio.sleep(0.2)
        left = await probe.queue_declare(queue, passive=True)
        assert left.message_count == 0  # the one left is still held by `channel`
        await channel.close()
        await asyncio.sleep(0.2)
        left = await probe.queue_declare(queue, passive=True)
        assert left.message_count == 1
        with pytest.raises(ChannelInvalidStateError):
            await write_acks(channel, None, [first + 3])
    finally:
        await connection.close()
