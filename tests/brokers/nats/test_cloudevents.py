"""The CloudEvents NATS binding on the wire: read with nats-py, checked with the SDK;
structured events and messages that older Herald stored (``cloudEvents_`` headers)
reach a Herald handler."""

from __future__ import annotations

import asyncio
import base64

import pytest
from cloudevents.core.bindings import http
from nats.aio.client import Client
from nats.aio.msg import Msg

import herald
from herald.broker import Prefetch, Subscription
from herald.brokers.nats import NATSBroker
from herald.brokers.nats.wire import from_headers, to_headers
from herald.errors import DecodeError
from herald.message import Message
from herald.wire import encode_headers

from ..ce_support import (
    BAD_VERSION,
    EVENT_TYPE,
    FORMAT,
    GOOD,
    assert_is_sent,
    assert_required_on_wire,
    handled_and_dead_lettered,
    sent_message,
    structured_body,
)
from .support import nats_url, next_delivery, require_nats

pytestmark = pytest.mark.nats


def old_herald_headers(message: Message) -> dict[str, str]:
    """The headers Herald wrote on NATS before it followed the binding: ``cloudEvents_``
    names, values that are not plain header text base64-encoded and listed in
    ``Herald-B64``."""
    headers = encode_headers(message)
    plain = {k: v for k, v in headers.items() if v.isascii() and v.isprintable() and v == v.strip()}
    encoded = [name for name in headers if name not in plain]
    for name in encoded:
        headers[name] = base64.b64encode(headers[name].encode()).decode()
    return {**headers, "Herald-B64": ",".join(encoded), "Nats-Msg-Id": message.id}


async def test_herald_writes_the_binary_mode_of_the_binding(
    broker: NATSBroker, raw: Client
) -> None:
    seen: asyncio.Queue[Msg] = asyncio.Queue()

    async def keep(msg: Msg) -> None:
        await seen.put(msg)

    await broker.declare(Subscription("cewire", EVENT_TYPE))
    watcher = await raw.subscribe(broker.names.event_subject(EVENT_TYPE), cb=keep)
    await raw.flush()
    sent = sent_message()
    await broker.publish([sent])
    msg = await asyncio.wait_for(seen.get(), 10)
    await watcher.unsubscribe()
    headers = dict(msg.headers or {})
    assert_required_on_wire(headers, "ce-")
    assert headers["ce-datacontenttype"] == "application/json"
    assert headers["ce-subject"] == "g%201/%E2%82%AC", "percent-encoded as the binding says"
    assert headers["x-trace"] == "t1" and not any(h.startswith("cloudEvents") for h in headers)
    assert_is_sent(http.from_binary(http.HTTPMessage(headers, msg.data), FORMAT), sent)


async def test_structured_events_reach_a_handler_and_malformed_ones_are_dead_lettered(
    raw: Client,
) -> None:
    require_nats()
    structured = http.to_structured(GOOD, FORMAT)

    async def inject(bus: herald.Bus, queue: str) -> None:
        assert isinstance(bus.broker, NATSBroker)
        subject = bus.broker.names.event_subject(EVENT_TYPE)
        js = raw.jetstream()
        await js.publish(subject, structured.body, headers=structured.headers)
        await js.publish(subject, structured_body(BAD_VERSION), headers=structured.headers)

    await handled_and_dead_lettered(nats_url(), inject)


async def test_messages_older_herald_stored_still_decode(broker: NATSBroker, raw: Client) -> None:
    sub = Subscription("ceold", EVENT_TYPE)
    await broker.declare(sub)
    old = sent_message()
    await raw.jetstream().publish(
        broker.names.event_subject(EVENT_TYPE), old.body, headers=old_herald_headers(old)
    )
    stream = broker.consume(sub, Prefetch(1))
    delivery = await next_delivery(stream)
    assert delivery.error is None and delivery.message == old
    await delivery.ack()
    await stream.aclose()


def test_ce_header_values_follow_the_binding_both_ways() -> None:
    message = Message(type="a.b", body=b"", subject='say "100%" ünïcode\n', source="/x y")
    headers = to_headers(message)
    assert headers["ce-subject"] == "say%20%22100%25%22%20%C3%BCn%C3%AFcode%0A"
    assert headers["ce-source"] == "/x%20y" and "Herald-B64" not in headers
    assert from_headers(headers, b"", None, "id") == message
    quoted = {"CE-Type": "a.b", "ce-id": "1", "Ce-Subject": '"a \\"b\\""%20c'}
    assert from_headers(quoted, b"", None, "id").subject == 'a "b" c'
    with pytest.raises(DecodeError, match="not percent-encoded UTF-8"):
        from_headers({"ce-type": "a.b", "ce-subject": "%C0%A0"}, b"", None, "id")
    with pytest.raises(DecodeError, match="quoted string"):
        from_headers({"ce-type": "a.b", "ce-subject": '"open'}, b"", None, "id")


def test_old_headers_decode_without_a_server() -> None:
    old = sent_message()
    assert from_headers(old_herald_headers(old), old.body, None, "unused") == old
