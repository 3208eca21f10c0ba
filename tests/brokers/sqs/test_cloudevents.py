"""CloudEvents on SQS (no official binding: the AMQP binding's ``cloudEvents_`` names,
one message attribute each): a message read with aiobotocore and checked with the
SDK; structured events sent by another program reach a Herald handler."""

from __future__ import annotations

from typing import Any

import pytest
from cloudevents.core.bindings import amqp, http

import herald
from herald.broker import Subscription
from herald.brokers.sqs import SQSBroker

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

pytestmark = pytest.mark.sqs


async def queue_url(broker: SQSBroker, raw_sqs: Any, queue: str) -> str:
    name = broker._parts().topology.names.queue(queue)
    return str((await raw_sqs.get_queue_url(QueueName=name))["QueueUrl"])


async def test_herald_writes_the_attributes_as_cloudevents_attributes(
    broker: SQSBroker, raw_sqs: Any
) -> None:
    sub = Subscription("cewire", EVENT_TYPE)
    await broker.declare(sub)
    sent = sent_message()
    await broker.publish([sent])
    url = await queue_url(broker, raw_sqs, sub.queue)
    got = await raw_sqs.receive_message(
        QueueUrl=url, MessageAttributeNames=["All"], WaitTimeSeconds=10
    )
    (received,) = got["Messages"]
    attributes = received["MessageAttributes"]
    assert {a["DataType"] for a in attributes.values()} <= {"String", "Number"}
    texts = {name: a["StringValue"] for name, a in attributes.items()}
    assert_required_on_wire(texts, "cloudEvents_")
    assert texts["cloudEvents_datacontenttype"] == "application/json"
    assert texts["x-trace"] == "t1"
    body = received["Body"].encode()
    assert_is_sent(amqp.from_binary(amqp.AMQPMessage({}, texts, body), FORMAT), sent)


async def test_structured_events_reach_a_handler_and_malformed_ones_are_dead_lettered(
    url: str, raw_sqs: Any
) -> None:
    structured = http.to_structured(GOOD, FORMAT)
    attributes = {
        name: {"DataType": "String", "StringValue": value}
        for name, value in structured.headers.items()
    }

    async def inject(bus: herald.Bus, queue: str) -> None:
        assert isinstance(bus.broker, SQSBroker)
        target = await queue_url(bus.broker, raw_sqs, queue)
        for n, body in enumerate((structured.body, structured_body(BAD_VERSION))):
            await raw_sqs.send_message(
                QueueUrl=target,
                MessageBody=body.decode(),
                MessageAttributes=attributes,
                MessageGroupId="g",
                MessageDeduplicationId=f"ce{n}",
            )

    await handled_and_dead_lettered(url, inject)
