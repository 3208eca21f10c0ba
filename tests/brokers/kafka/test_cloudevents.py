"""CloudEvents on Kafka (the official Kafka protocol binding, binary content mode:
``ce_`` headers, ``content-type``, the key as ``partitionkey``): a record read with
aiokafka and checked with the SDK; structured events produced by another program
reach a Herald handler, and a malformed one is dead-lettered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cloudevents.core.bindings import kafka

import herald
from herald.broker import Subscription
from herald.brokers import broker_from_url
from herald.brokers.kafka import KafkaBroker

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
from .server import kafka_url, shared_tansu

pytestmark = pytest.mark.kafka


@pytest.fixture
async def url() -> AsyncIterator[str]:
    url = kafka_url(f"ce{uuid.uuid4().hex[:10]}")
    yield url
    async with broker_from_url(url) as broker:
        await broker.destroy()


async def test_herald_writes_the_kafka_binding(url: str) -> None:
    sent = sent_message()
    async with KafkaBroker.from_url(url) as broker:
        await broker.declare(Subscription("cewire", EVENT_TYPE))
        await broker.publish([sent])
        topic = broker._parts().topology.names.events(EVENT_TYPE)
    reader = AIOKafkaConsumer(
        topic, bootstrap_servers=shared_tansu().bootstrap, auto_offset_reset="earliest"
    )
    await reader.start()
    try:
        record = await asyncio.wait_for(reader.getone(), 30)
    finally:
        await reader.stop()
    headers = {name: bytes(value) for name, value in record.headers}
    assert_required_on_wire(headers, "ce_")
    assert headers["content-type"] == b"application/json"
    assert headers["x-trace"] == b"t1"
    assert record.key == (sent.subject or "").encode()
    event = kafka.from_binary(kafka.KafkaMessage(headers, record.key, record.value or b""), FORMAT)
    assert_is_sent(event, sent)
    assert event.get_extension("partitionkey") in (sent.subject, record.key)


async def test_structured_events_reach_a_handler_and_malformed_ones_are_dead_lettered(
    url: str,
) -> None:
    structured = kafka.to_structured(GOOD, FORMAT)

    async def inject(bus: herald.Bus, queue: str) -> None:
        assert isinstance(bus.broker, KafkaBroker)
        topic = bus.broker._parts().topology.names.events(EVENT_TYPE)
        producer = AIOKafkaProducer(bootstrap_servers=shared_tansu().bootstrap)
        await producer.start()
        try:
            for body in (structured.value, structured_body(BAD_VERSION)):
                await producer.send_and_wait(topic, body, headers=list(structured.headers.items()))
        finally:
            await producer.stop()

    await handled_and_dead_lettered(url, inject)
