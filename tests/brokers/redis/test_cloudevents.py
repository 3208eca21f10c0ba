"""CloudEvents on Redis (no official binding: the AMQP binding's ``cloudEvents_``
names, one stream field each): an entry read with redis-py and checked with the SDK;
structured events written by another program reach a Herald handler."""

from __future__ import annotations

import pytest
from cloudevents.core.bindings import amqp, http

import herald
from herald.broker import Subscription
from herald.brokers.redis import RedisBroker

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
from .conftest import raw_client, shared_url

pytestmark = pytest.mark.redis


async def test_herald_writes_the_attributes_as_cloudevents_fields(broker: RedisBroker) -> None:
    sub = Subscription("cewire", EVENT_TYPE)
    await broker.declare(sub)
    sent = sent_message()
    await broker.publish([sent])
    async with raw_client() as client:
        ((_, raw),) = await client.xrange(broker.keys.queue(sub.queue))
    fields = {name.decode(): value for name, value in raw.items()}
    body = fields.pop("body")
    texts = {name: value.decode() for name, value in fields.items()}
    assert_required_on_wire(texts, "cloudEvents_")
    assert texts["cloudEvents_datacontenttype"] == "application/json"
    assert texts["x-trace"] == "t1"
    event = amqp.from_binary(amqp.AMQPMessage({}, dict(texts), body), FORMAT)
    assert_is_sent(event, sent)


async def test_structured_events_reach_a_handler_and_malformed_ones_are_dead_lettered(
    namespace: str,
) -> None:
    structured = http.to_structured(GOOD, FORMAT)

    async def inject(bus: herald.Bus, queue: str) -> None:
        assert isinstance(bus.broker, RedisBroker)
        stream = bus.broker.keys.queue(queue)
        async with raw_client() as client:
            for body in (structured.body, structured_body(BAD_VERSION)):
                await client.xadd(stream, {**structured.headers, "body": body})

    await handled_and_dead_lettered(shared_url(namespace, block=0.05), inject)
