"""``DeadLetterAdmin`` on RabbitMQ: list, replay, purge, and ``dlq_retention``."""

from __future__ import annotations

import logging

import pytest
from aiormq.abc import AbstractConnection

from herald.broker import Prefetch, Subscription
from herald.brokers import broker_from_url
from herald.brokers.amqp import AMQPBroker
from herald.capabilities import DeadLetterAdmin
from herald.deadletter import DeadLetterReason
from herald.errors import BrokerError
from herald.message import Message
from herald.testing import until

from .conftest import destroy
from .support import SERVER, has_arguments, next_of, publish_raw

pytestmark = pytest.mark.amqp


async def dead_letter(broker: AMQPBroker, sub: Subscription, messages: list[Message]) -> None:
    await broker.declare(sub)
    await broker.publish(messages)
    stream = broker.consume(sub, Prefetch(10))
    for _ in messages:
        delivery = await next_of(stream)
        await delivery.dead_letter(DeadLetterReason(sub.queue, "KeyError", "'x'", 5))
    await stream.aclose()


async def test_dead_letters_list_replay_purge(broker: AMQPBroker) -> None:
    assert isinstance(broker, DeadLetterAdmin)
    sub = Subscription("svc", "job.created")
    sent = [Message(type="job.created", body=str(n).encode()) for n in range(3)]
    await dead_letter(broker, sub, sent)

    assert [d.message.id for d in await broker.dead_letters("svc", limit=2)] == [
        m.id for m in sent[:2]
    ]
    letters = await broker.dead_letters("svc")
    assert [d.message for d in letters] == sent
    assert letters[0].reason.error_type == "KeyError" and letters[0].reason.attempts == 5

    progress: list[tuple[int, int]] = []

    def record(done: int, total: int) -> None:
        progress.append((done, total))

    assert await broker.replay_dead_letters("svc", [sent[1].id], record) == 1
    stream = broker.consume(sub, Prefetch(10))
    replayed = await next_of(stream)
    assert (replayed.message, replayed.attempt) == (sent[1], 1)
    await replayed.ack()
    await stream.aclose()
    assert progress == [(1, 1)]

    assert await broker.purge_dead_letters("svc", [sent[0].id]) == 1
    assert [d.message.id for d in await broker.dead_letters("svc")] == [sent[2].id]
    assert await broker.purge_dead_letters("svc") == 1
    assert await broker.dead_letters("svc") == []


async def test_dead_letters_expire_after_the_retention(namespace: str) -> None:
    url = f"{SERVER}?namespace={namespace}&dlq_retention=1"
    broker = broker_from_url(url)
    assert isinstance(broker, AMQPBroker)
    await broker.connect()
    try:
        sub = Subscription("svc", "job.created")
        await dead_letter(broker, sub, [Message(type="job.created", body=b"old")])
        assert len(await broker.dead_letters("svc")) == 1
        await until(
            lambda: broker.dead_letters("svc"), lambda letters: letters == [], what="expiry"
        )
    finally:
        await destroy(url)
        await broker.close()


async def test_retention_is_the_queue_ttl(raw: AbstractConnection, namespace: str) -> None:
    for option, arguments in [("", {"x-message-ttl": 14 * 24 * 3600 * 1000}), ("0", {})]:
        url = f"{SERVER}?namespace={namespace}" + (f"&dlq_retention={option}" if option else "")
        broker = broker_from_url(url)
        await broker.connect()
        try:
            sub = Subscription(f"svc{option or 'd'}", "job.created")
            assert isinstance(broker, AMQPBroker)
            await dead_letter(broker, sub, [Message(type="job.created", body=b"x")])
            assert await has_arguments(raw, f"{namespace}.{sub.service}.dlq", arguments)
        finally:
            await destroy(url)
            await broker.close()


async def test_a_dead_letter_queue_declared_without_retention_is_used_as_it_is(
    broker: AMQPBroker, raw: AbstractConnection, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    channel = await raw.channel()
    await channel.queue_declare(f"{namespace}.svc.dlq", durable=True)  # an older Herald's
    await channel.close()
    sub = Subscription("svc", "job.created")
    message = Message(type="job.created", body=b"x")
    with caplog.at_level(logging.WARNING, "herald.amqp"):
        await dead_letter(broker, sub, [message])
    assert [d.message.id for d in await broker.dead_letters("svc")] == [message.id]
    assert "dlq_retention=1209600s" in caplog.text and f"{namespace}.svc.dlq" in caplog.text
    assert await has_arguments(raw, f"{namespace}.svc.dlq", {}), "left as it was"


async def test_foreign_input_in_a_dead_letter_queue(
    broker: AMQPBroker, raw: AbstractConnection, namespace: str
) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    await broker.dead_letters("svc")  # declares svc.dlq
    dlq = f"{namespace}.svc.dlq"
    await publish_raw(
        raw, "", dlq, b"?", message_id="odd-1", headers={"cloudEvents_time": "not a time"}
    )
    await publish_raw(
        raw,
        "",
        dlq,
        b"{}",
        message_id="odd-2",
        headers={"herald-dl-queue": "other.job.created", "herald-dl-attempts": "x"},
    )
    odd, misdirected = await broker.dead_letters("svc")
    assert (odd.message.id, odd.message.body) == ("odd-1", b"?"), "listed as it came"
    assert misdirected.reason.queue == "other.job.created" and misdirected.reason.attempts == 0
    with pytest.raises(BrokerError, match="not one of svc's"):
        await broker.replay_dead_letters("svc", ["odd-2"])
    assert len(await broker.dead_letters("svc")) == 2, "nothing was replayed"
