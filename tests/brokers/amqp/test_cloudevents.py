"""The CloudEvents AMQP binding on RabbitMQ: what Herald writes, read with aiormq and
checked with the SDK's AMQP binding; structured events reach a Herald handler."""

from __future__ import annotations

import pytest
from aiormq.abc import AbstractConnection
from cloudevents.core.bindings import amqp

import herald
from herald.broker import Subscription
from herald.brokers.amqp import AMQPBroker

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
from .support import publish_raw

pytestmark = pytest.mark.amqp


async def test_herald_writes_the_binary_mode_of_the_binding(
    broker: AMQPBroker, raw: AbstractConnection, namespace: str
) -> None:
    await broker.declare(Subscription("cewire", EVENT_TYPE))
    peek = f"{namespace}.cepeek"
    channel = await raw.channel()
    await channel.queue_declare(peek, exclusive=True)
    await channel.queue_bind(peek, broker.settings.exchange, routing_key=EVENT_TYPE)
    sent = sent_message()
    await broker.publish([sent])
    got = await channel.basic_get(peek, no_ack=True)
    await channel.close()
    props = got.header.properties
    headers = dict(props.headers or {})
    assert_required_on_wire(headers, "cloudEvents_")
    assert props.content_type == "application/json"
    assert "cloudEvents_datacontenttype" not in headers, "the content_type property carries it"
    message = amqp.AMQPMessage({"content-type": props.content_type}, headers, got.body)
    assert_is_sent(amqp.from_binary(message, FORMAT), sent)


async def test_structured_events_reach_a_handler_and_malformed_ones_are_dead_lettered(
    url: str, raw: AbstractConnection
) -> None:
    structured = amqp.to_structured(GOOD, FORMAT)
    content_type = structured.properties["content-type"]

    async def inject(bus: herald.Bus, queue: str) -> None:
        assert isinstance(bus.broker, AMQPBroker)
        exchange = bus.broker.settings.exchange
        for body in (structured.application_data, structured_body(BAD_VERSION)):
            await publish_raw(raw, exchange, EVENT_TYPE, body, content_type=content_type)

    await handled_and_dead_lettered(url, inject)
