"""The RabbitMQ adapter against a server: names, confirms, attempts, input, recovery.

Every test works in its own ``namespace=``; none stops or restarts the shared server
(outages are a TCP relay cut for one client, see ``tests.relay.Relay``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import aiormq
import pytest
from aiormq.abc import AbstractConnection

import herald
from herald.broker import Delivery, Prefetch, Subscription
from herald.brokers import broker_from_url
from herald.brokers.amqp import AMQPBroker
from herald.deadletter import FIRST_FAILURE, DeadLetterReason
from herald.errors import (
    BrokerError,
    ConnectionLostError,
    DecodeError,
    HeaderError,
    MessageTooLargeError,
    PublishError,
)
from herald.message import Message

from ...relay import Relay
from ...servers import restart_rabbitmq
from .support import (
    SERVER,
    close_connections_of,
    next_of,
    publish_raw,
    queue_exists,
    require_server,
)

pytestmark = pytest.mark.amqp


async def depth(broker: AMQPBroker, queue: str) -> int:
    [stats] = await broker.inspect_queues([queue])
    return stats.depth


async def test_topology_names_and_destroy(
    broker: AMQPBroker, raw: AbstractConnection, namespace: str, url: str
) -> None:
    sub = Subscription("payroll", "employee-events", ("employee.*",))
    await broker.declare(sub)
    await broker.declare(sub)  # idempotent
    await broker.publish([Message(type="employee.created", body=b"{}")])
    stream = broker.consume(sub, Prefetch(4))
    first = await next_of(stream)
    assert first.message.type == "employee.created"
    await first.retry(0.5, {})
    second = await next_of(stream)
    await second.dead_letter(DeadLetterReason(sub.queue, "E", "boom", 2))
    await stream.aclose()

    names = [
        f"{namespace}.payroll.employee-events",
        f"{namespace}.payroll.employee-events.retry.500ms",
        f"{namespace}.payroll.dlq",
    ]
    for name in names:
        assert await queue_exists(raw, name), name
    channel = await raw.channel()
    await channel.exchange_declare(f"{namespace}.events", exchange_type="topic", passive=True)
    await channel.close()

    other = broker_from_url(url)  # destroy works from another broker object too
    await other.connect()
    try:
        await other.destroy()
    finally:
        await other.close()
    for name in names:
        assert not await queue_exists(raw, name), name


async def test_the_registry_holds_each_queue_once_however_often_brokers_start(
    url: str, namespace: str, raw: AbstractConnection
) -> None:
    """AMQP cannot list queues, so a namespace records its queues in a registry queue
    for destroy(); every broker object that started used to add a record per queue."""
    subs = [Subscription("svc", "job.created"), Subscription("svc", "job.deleted")]
    for _ in range(5):
        starting = broker_from_url(url)
        await starting.connect()
        try:
            for sub in subs:
                await starting.declare(sub)
        finally:
            await starting.close()
    channel = await raw.channel()
    ok = await channel.queue_declare(f"{namespace}.herald-registry", passive=True)
    await channel.close()
    assert ok.message_count == 2, "one record per queue"
    cleaner = broker_from_url(url)
    await cleaner.connect()
    try:
        await cleaner.destroy()
    finally:
        await cleaner.close()
    for sub in subs:
        assert not await queue_exists(raw, f"{namespace}.{sub.queue}")


async def test_batch_is_confirmed_and_attributes_round_trip(
    broker: AMQPBroker, raw: AbstractConnection, namespace: str
) -> None:
    sub = Subscription("svc", "thing.happened")
    await broker.declare(sub)
    peek = f"{namespace}.peek"
    channel = await raw.channel()
    await channel.queue_declare(peek, exclusive=True)
    await channel.queue_bind(peek, f"{namespace}.events", routing_key="#")

    sent = [
        Message(
            type="thing.happened",
            body=json.dumps({"n": n}).encode(),
            subject=f"k{n % 3}",
            headers={"x-trace": f"t{n}"},
            source="tests",
        )
        for n in range(200)
    ]
    await broker.publish(sent)

    stream = broker.consume(sub, Prefetch(50))
    received = []
    for _ in sent:
        delivery = await next_of(stream)
        received.append(delivery)
        await delivery.ack()
    await stream.aclose()
    assert [d.message for d in received] == sent
    assert {d.attempt for d in received} == {1}
    assert {d.error for d in received} == {None}

    got = await channel.basic_get(peek, no_ack=True)
    props = got.header.properties
    assert props.delivery_mode == 2
    assert props.message_id == sent[0].id
    assert props.content_type == "application/json"
    assert props.message_type == "thing.happened"
    assert props.headers is not None
    assert props.headers["cloudEvents_id"] == sent[0].id
    assert props.headers["cloudEvents_subject"] == "k0"
    assert props.headers["cloudEvents_source"] == "tests"
    assert props.headers["x-trace"] == "t0"
    await channel.close()


async def test_refusals_raise(broker: AMQPBroker, raw: AbstractConnection) -> None:
    full = broker.settings.name("full")
    channel = await raw.channel()
    args: dict[str, Any] = {"x-max-length": 1, "x-overflow": "reject-publish"}
    await channel.queue_declare(full, exclusive=True, arguments=args)
    await channel.queue_bind(full, broker.settings.exchange, routing_key="overflow.*")
    await broker.publish([Message(type="overflow.one", body=b"1")])
    with pytest.raises(PublishError, match="nack"):
        await broker.publish([Message(type="overflow.two", body=b"2")])
    await broker.publish([Message(type="unbound.type", body=b"3")])  # unroutable: fine
    big = Message(type="big.one", body=b"x" * (16 * 1024 * 1024 + 1))
    with pytest.raises(MessageTooLargeError) as info:
        await broker.publish([Message(type="unbound.type", body=b"4"), big])
    assert (info.value.message_id, info.value.limit) == (big.id, 16 * 1024 * 1024)
    await channel.close()


async def test_concurrent_single_publishes_each_get_their_own_outcome(
    broker: AMQPBroker, raw: AbstractConnection
) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    full = broker.settings.name("full")
    channel = await raw.channel()
    args: dict[str, Any] = {"x-max-length": 1, "x-overflow": "reject-publish"}
    await channel.queue_declare(full, exclusive=True, arguments=args)
    await channel.queue_bind(full, broker.settings.exchange, routing_key="overflow.*")
    good = [Message(type="job.created", body=str(n).encode()) for n in range(100)]
    overflowing = [Message(type="overflow.x", body=b"o") for _ in range(5)]
    results = await asyncio.gather(
        *(broker.publish([m]) for m in good + overflowing), return_exceptions=True
    )
    assert results[: len(good)] == [None] * len(good)
    refused = [r for r in results[len(good) :] if isinstance(r, PublishError)]
    assert len(refused) == len(overflowing) - 1
    stream = broker.consume(sub, Prefetch(200))
    seen = set()
    for _ in good:
        delivery = await next_of(stream)
        seen.add(delivery.message.id)
        await delivery.ack()
    assert seen == {m.id for m in good}
    await stream.aclose()
    await channel.close()


async def test_retry_waits_and_carries_headers_and_attempts(broker: AMQPBroker) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    await broker.publish([Message(type="job.created", body=b"{}", headers={"a": "1"})])
    stream = broker.consume(sub, Prefetch(10))
    first = await next_of(stream)
    assert first.attempt == 1
    await first.retry(1.0, {FIRST_FAILURE: "then", "b": "2"})
    assert await depth(broker, sub.queue) == 1, "the copy waits in the retry queue"
    await broker.publish([Message(type="job.created", body=b"marker")])
    marker = await next_of(stream)
    assert marker.message.body == b"marker", "published after the retry, delivered before it"
    await marker.ack()
    second = await next_of(stream)
    assert second.attempt == 2
    assert second.message.id == first.message.id
    assert dict(second.message.headers) == {"a": "1", "b": "2", FIRST_FAILURE: "then"}
    await second.retry(0, {})
    third = await next_of(stream)
    assert third.attempt == 3
    await third.ack()
    await stream.aclose()


async def test_release_is_no_attempt_but_a_crash_is(broker: AMQPBroker, url: str) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    released, crashed = (Message(type="job.created", body=str(n).encode()) for n in range(2))
    await broker.publish([released])
    stream = broker.consume(sub, Prefetch(10))
    first = await next_of(stream)
    await first.release()
    again = await next_of(stream)
    assert (again.message.id, again.attempt) == (released.id, 1)
    await again.ack()
    await stream.aclose()

    await broker.publish([crashed])
    crashing = broker_from_url(url)
    await crashing.connect()
    doomed = crashing.consume(sub, Prefetch(10))
    taken = await next_of(doomed)
    assert (taken.message.id, taken.attempt) == (crashed.id, 1)
    await crashing.close()  # dies holding the delivery: the broker redelivers it
    stream = broker.consume(sub, Prefetch(10))
    redelivered = await next_of(stream)
    assert (redelivered.message.id, redelivered.attempt) == (crashed.id, 2)
    await redelivered.ack()
    await stream.aclose()
    with pytest.raises(ConnectionLostError):
        await taken.ack()


async def test_closed_consumer_keeps_channel_for_outstanding_acks(broker: AMQPBroker) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    sent = [Message(type="job.created", body=str(n).encode()) for n in range(5)]
    await broker.publish(sent)
    stream = broker.consume(sub, Prefetch(10))
    held = await next_of(stream)
    await stream.aclose()  # the others were prefetched: they go back unhandled
    await held.ack()
    stream = broker.consume(sub, Prefetch(10))
    rest = [await next_of(stream) for _ in sent[1:]]
    assert sorted(d.message.body for d in rest) == [b"1", b"2", b"3", b"4"]
    assert {d.attempt for d in rest} == {1}
    for delivery in rest:
        await delivery.ack()
    await broker.publish([Message(type="job.created", body=b"marker")])
    after = await next_of(stream)
    assert after.message.body == b"marker"  # the acked one did not come back
    await after.ack()
    await stream.aclose()


async def test_prefetch_bounds_unsettled_deliveries(broker: AMQPBroker) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    await broker.publish([Message(type="job.created", body=str(n).encode()) for n in range(10)])
    stream = broker.consume(sub, Prefetch(3))
    held = [await next_of(stream) for _ in range(3)]
    assert await depth(broker, sub.queue) == 7, "the broker holds back all but the window"
    await held[0].ack()
    fourth = await next_of(stream)
    assert fourth.message.body == b"3"
    for delivery in [*held[1:], fourth]:
        await delivery.ack()
    await stream.aclose()


async def test_foreign_and_undecodable_messages_are_deliveries(
    broker: AMQPBroker, raw: AbstractConnection
) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    exchange = broker.settings.exchange
    await publish_raw(
        raw,
        exchange,
        "job.created",
        b"bad",
        message_id="bad-1",
        headers={"cloudEvents_time": "yesterday-ish", "x-trace": "t1"},
    )
    await publish_raw(
        raw,
        exchange,
        "job.created",
        b"ok",
        content_type="text/plain",
        message_id="m-1",
        headers={"count": 3, "blob": bytearray(b"raw"), "flag": True},
    )

    stream = broker.consume(sub, Prefetch(10))
    bad = await next_of(stream)
    assert isinstance(bad.error, DecodeError) and "yesterday-ish" in str(bad.error)
    assert (bad.message.type, bad.message.id, bad.message.body) == ("job.created", "bad-1", b"bad")
    assert dict(bad.message.headers) == {"x-trace": "t1"}, "the bad attributes are left out"
    good = await next_of(stream)
    assert good.error is None
    assert (good.message.type, good.message.id, good.message.body) == ("job.created", "m-1", b"ok")
    assert good.message.datacontenttype == "text/plain"
    assert dict(good.message.headers) == {"count": "3", "blob": "raw", "flag": "true"}
    await good.ack()
    assert await broker.dead_letters("svc") == [], "the adapter dead-letters nothing itself"
    await bad.dead_letter(DeadLetterReason(sub.queue, "DecodeError", str(bad.error), 1))
    [letter] = await broker.dead_letters("svc")
    assert (letter.message.body, letter.reason.error_type) == (b"bad", "DecodeError")
    await stream.aclose()


async def test_forged_attempt_headers_are_header_errors(
    broker: AMQPBroker, raw: AbstractConnection
) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    forged: list[Any] = [-1_000_000_000, 0, 10**12, "abc", "-5", 2.5]
    for n, value in enumerate(forged):
        await publish_raw(
            raw,
            broker.settings.exchange,
            "job.created",
            b"{}",
            message_id=f"forged-{n}",
            headers={"herald-attempt": value},
        )
    await publish_raw(
        raw,
        broker.settings.exchange,
        "job.created",
        b"{}",
        message_id="fine",
        headers={"herald-attempt": "3", "x-delivery-count": 1000},
    )
    stream = broker.consume(sub, Prefetch(20))
    for n, value in enumerate(forged):
        delivery = await next_of(stream)
        assert delivery.message.id == f"forged-{n}"
        assert isinstance(delivery.error, HeaderError), value
        assert "herald-attempt" in str(delivery.error) and delivery.attempt == 1
        await delivery.ack()
    fine = await next_of(stream)
    assert (fine.message.id, fine.error, fine.attempt) == ("fine", None, 3), (
        "a classic queue has no x-delivery-count: a publisher's is ignored"
    )
    assert "x-delivery-count" not in fine.message.headers
    await fine.ack()
    await stream.aclose()


async def test_id_less_message_keeps_its_id_across_redeliveries(
    broker: AMQPBroker, raw: AbstractConnection, url: str
) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    await publish_raw(raw, broker.settings.exchange, "job.created", b'{"n": 1}')
    stream = broker.consume(sub, Prefetch(10))
    first = await next_of(stream)
    await first.release()
    released = await next_of(stream)
    await stream.aclose()
    other = broker_from_url(url)  # another process would see the same id
    await other.connect()
    try:
        elsewhere = other.consume(sub, Prefetch(10))
        await released.release()
        again = await next_of(elsewhere)
        await again.ack()
        await elsewhere.aclose()
    finally:
        await other.close()
    assert first.message.id == released.message.id == again.message.id
    assert again.attempt == 2, "another broker cannot tell a release from a crash"


async def test_id_less_message_keeps_its_id_in_the_runtime(
    url: str, raw: AbstractConnection, namespace: str
) -> None:
    service = herald.Service("idless")
    seen: list[str] = []
    first_started = asyncio.Event()

    @service.on("job.created")
    async def handle(message: herald.Message, ctx: herald.Context) -> None:
        seen.append(ctx.message.id)
        if len(seen) == 1:
            first_started.set()
            await asyncio.sleep(60)  # stopped while handling: released, handled again

    async with herald.connect(url) as bus:
        try:
            worker = await bus.start(service)
            await publish_raw(raw, f"{namespace}.events", "job.created", b'{"n": 2}')
            await asyncio.wait_for(first_started.wait(), 10)
            await worker.stop(timeout=0.1)
            worker = await bus.start(service)
            deadline = time.monotonic() + 10
            while len(seen) < 2:
                assert time.monotonic() < deadline, "not redelivered"
                await asyncio.sleep(0.02)
            await worker.stop()
        finally:
            await bus.broker.destroy()
    assert seen[0] == seen[1]


async def test_a_failed_settlement_frees_its_room_and_the_message_comes_back(
    broker: AMQPBroker, namespace: str
) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    await broker.publish([Message(type="job.created", body=b"1")])
    stream = broker.consume(sub, Prefetch(1))
    held = await next_of(stream)
    generation = broker.connection.generation
    assert await close_connections_of(namespace) >= 1
    deadline = time.monotonic() + 10
    while broker.connection.generation == generation:
        assert time.monotonic() < deadline, "no reconnect"
        await asyncio.sleep(0.02)
    with pytest.raises(ConnectionLostError):
        await held.ack()
    again = await next_of(stream)  # a prefetch of one: the failed ack gave its room back
    assert (again.message.id, again.attempt) == (held.message.id, 2)
    await again.ack()
    await stream.aclose()


async def test_a_failed_dead_letter_requeues(
    broker: AMQPBroker, raw: AbstractConnection, namespace: str
) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    channel = await raw.channel()
    await channel.queue_declare(f"{namespace}.svc.dlq", exclusive=True)  # locked for Herald
    await broker.publish([Message(type="job.created", body=b"1")])
    stream = broker.consume(sub, Prefetch(1))
    first = await next_of(stream)
    with pytest.raises(BrokerError):
        await first.dead_letter(DeadLetterReason(sub.queue, "E", "x", 1))
    again = await next_of(stream)
    assert (again.message.id, again.attempt) == (first.message.id, 2)
    await channel.close()
    await again.ack()
    await stream.aclose()


async def test_transient_subscription_keeps_messages_from_declare_and_vanishes(
    broker: AMQPBroker, raw: AbstractConnection
) -> None:
    sub = Subscription("tail-x", "all", ("#",), durable=False)
    await broker.declare(sub)
    await broker.publish([Message(type="any.thing", body=b"1")])
    stream = broker.consume(sub, Prefetch(10))
    delivery = await next_of(stream)
    assert delivery.message.type == "any.thing"
    await delivery.ack()
    await stream.aclose()
    name = broker.settings.name(sub.queue)
    deadline = time.monotonic() + 5
    while await queue_exists(raw, name):
        assert time.monotonic() < deadline, "transient queue still there"
        await asyncio.sleep(0.05)


async def test_connection_drop_recovers_publisher_and_consumer(
    broker: AMQPBroker, namespace: str
) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    first = [Message(type="job.created", body=b"1") for _ in range(20)]
    await broker.publish(first)
    stream = broker.consume(sub, Prefetch(100))
    held = await next_of(stream)
    generation = broker.connection.generation

    assert await close_connections_of(namespace) >= 1
    deadline = time.monotonic() + 10
    while broker.connection.generation == generation:  # the client notices and reconnects
        assert time.monotonic() < deadline, "no reconnect"
        await asyncio.sleep(0.02)
    with pytest.raises(ConnectionLostError):
        await held.ack()
    second = [Message(type="job.created", body=b"2") for _ in range(20)]
    await broker.publish(second)

    seen: set[str] = set()
    wanted = {m.id for m in first + second}
    while not wanted <= seen:
        delivery = await next_of(stream)
        seen.add(delivery.message.id)
        await delivery.ack()
    await stream.aclose()


async def test_an_outage_longer_than_reconnect_timeout_raises_then_recovers(
    namespace: str,
) -> None:
    require_server()
    proxy = Relay(5672)
    await proxy.start()
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/?namespace={namespace}&reconnect_timeout=0.5"
    broker = broker_from_url(url)
    await broker.connect()
    sub = Subscription("svc", "job.created")
    try:
        await broker.declare(sub)
        stream = broker.consume(sub, Prefetch(10))
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.2)  # subscribed
        await proxy.cut()
        with pytest.raises(ConnectionLostError):  # gives up after 0.5 s, drops nothing
            await broker.publish([Message(type="job.created", body=b"lost?")])
        with pytest.raises(ConnectionLostError):  # the worker then calls consume() again
            await asyncio.wait_for(waiting, 10)
        await proxy.start()  # the server is back
        sent = Message(type="job.created", body=b"after")
        deadline = time.monotonic() + 30
        while True:
            try:
                await broker.publish([sent])
                break
            except ConnectionLostError:
                assert time.monotonic() < deadline, "did not reconnect"
        stream = broker.consume(sub, Prefetch(10))
        delivery = await next_of(stream, 30)
        assert delivery.message.id == sent.id
        await delivery.ack()
        await stream.aclose()
    finally:
        with contextlib.suppress(Exception):
            await broker.destroy()
        await broker.close()
        await proxy.cut()


@pytest.mark.restart
async def test_retries_and_dead_letters_survive_a_broker_restart(broker: AMQPBroker) -> None:
    """Restarts the shared RabbitMQ (``-m restart`` only). The conformance scenario
    covers losing nothing under load; this is what lives in AMQP's own queues: a
    retry waiting in its TTL queue and a dead letter."""
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    await broker.publish(
        [Message(type="job.created", body=b"retried"), Message(type="job.created", body=b"dead")]
    )
    stream = broker.consume(sub, Prefetch(10))
    first = await next_of(stream)
    second = await next_of(stream)
    await first.retry(5.0, {"why": "restart"})
    await second.dead_letter(DeadLetterReason(sub.queue, "E", "x", 1))
    generation = broker.connection.generation
    await restart_rabbitmq()
    back = await next_of(stream, 60)  # the consumer subscribed again on the new connection
    assert (back.message.body, back.attempt) == (b"retried", 2)
    assert back.message.headers["why"] == "restart"
    await back.ack()
    await stream.aclose()
    assert broker.connection.generation > generation
    [letter] = await broker.dead_letters("svc")
    assert (letter.message.body, letter.reason.error_type) == (b"dead", "E")


async def test_consumer_cancelled_by_broker_resubscribes(
    broker: AMQPBroker, raw: AbstractConnection
) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    stream = broker.consume(sub, Prefetch(10))
    received: asyncio.Queue[Delivery] = asyncio.Queue()

    async def pump() -> None:
        async for delivery in stream:
            await received.put(delivery)
            await delivery.ack()

    pumping = asyncio.create_task(pump())
    await broker.publish([Message(type="job.created", body=b"before")])
    before = await asyncio.wait_for(received.get(), 10)
    assert before.message.body == b"before"
    channel = await raw.channel()
    await channel.queue_delete(broker.settings.name(sub.queue))
    await channel.close()

    message = Message(type="job.created", body=b"after")
    deadline = time.monotonic() + 10
    got = None
    while got is None:  # publish until the queue is declared and bound again
        assert time.monotonic() < deadline, "consumer did not resubscribe"
        await broker.publish([message])
        with contextlib.suppress(TimeoutError):
            got = await asyncio.wait_for(received.get(), 0.5)
    assert got.message.body == b"after"
    pumping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pumping
    await stream.aclose()


async def test_deleted_exchange_is_declared_again(
    broker: AMQPBroker, raw: AbstractConnection
) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    channel = await raw.channel()
    await channel.exchange_delete(broker.settings.exchange)
    await channel.close()
    await broker.publish([Message(type="job.created", body=b"still routed")])
    stream = broker.consume(sub, Prefetch(10))
    delivery = await next_of(stream)
    assert delivery.message.body == b"still routed"
    await delivery.ack()
    await stream.aclose()


async def test_credentials_never_in_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    require_server()
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-Pa55word"
    wrong = broker_from_url(f"amqp://guest:{secret}@127.0.0.1:5672/?connect_timeout=5")
    with pytest.raises(BrokerError) as info:
        await wrong.connect()
    await wrong.close()
    text = f"{info.value} {info.value!r} {info.value.__cause__!r}"
    assert secret not in text and secret not in caplog.text
    assert "127.0.0.1:5672" in str(info.value)
    assert "authentication" in str(info.value)
    assert secret not in repr(wrong)

    nowhere = broker_from_url(f"amqp://guest:{secret}@127.0.0.1:1,localhost:2/?connect_timeout=2")
    with pytest.raises(BrokerError) as info:
        await nowhere.connect()
    await nowhere.close()
    assert "127.0.0.1:1" in str(info.value) and "localhost:2" in str(info.value)
    assert secret not in str(info.value) and secret not in caplog.text


async def test_hosts_are_tried_in_turn(namespace: str) -> None:
    require_server()
    broker = broker_from_url(
        f"amqp://guest:guest@127.0.0.1:1,127.0.0.1:5672/?namespace={namespace}"
    )
    await broker.connect()
    try:
        sub = Subscription("svc", "job.created")
        await broker.declare(sub)
        await broker.publish([Message(type="job.created", body=b"{}")])
        stream = broker.consume(sub, Prefetch(1))
        delivery = await next_of(stream)
        await delivery.ack()
        await stream.aclose()
    finally:
        await broker.destroy()
        await broker.close()


async def test_not_connected_is_an_error_not_a_wait() -> None:
    broker = broker_from_url("amqp://guest:guest@127.0.0.1:5672/?namespace=never")
    with pytest.raises(BrokerError, match="not connected"):
        await broker.publish([Message(type="job.created", body=b"{}")])


async def test_quorum_queues(namespace: str, raw: AbstractConnection) -> None:
    require_server()
    url = f"{SERVER}?namespace={namespace}&queue_type=quorum"
    broker = broker_from_url(url)
    assert isinstance(broker, AMQPBroker)
    await broker.connect()
    try:
        sub = Subscription("svc", "job.created")
        await broker.declare(sub)
        probe = await raw.channel()
        with pytest.raises(aiormq.ChannelPreconditionFailed):  # it is not classic
            await probe.queue_declare(
                f"{namespace}.svc.job.created",
                durable=True,
                arguments={"x-queue-type": "classic"},
            )
        channel = await raw.channel()
        await broker.publish([Message(type="job.created", body=b"{}")])
        stream = broker.consume(sub, Prefetch(10))
        first = await next_of(stream)
        assert first.attempt == 1
        await first.release()
        again = await next_of(stream)
        assert again.attempt == 1  # x-delivery-count counted the release; not an attempt
        await again.retry(0.1, {"why": "test"})
        retried = await next_of(stream)
        assert retried.attempt == 2 and retried.message.headers["why"] == "test"
        await retried.dead_letter(DeadLetterReason(sub.queue, "E", "x", 2))
        assert [d.message.id for d in await broker.dead_letters("svc")] == [first.message.id]
        await stream.aclose()

        # what RabbitMQ dead-letters itself (4.x delivery limit) lands in the dlq too
        rejected = Message(type="job.created", body=b"rejected")
        await broker.publish([rejected])
        got = await channel.basic_get(f"{namespace}.svc.job.created")
        assert got.delivery_tag is not None
        await channel.basic_nack(got.delivery_tag, requeue=False)
        deadline = time.monotonic() + 10
        while len(letters := await broker.dead_letters("svc")) < 2:
            assert time.monotonic() < deadline, "not dead-lettered by the broker"
            await asyncio.sleep(0.05)
        by_id = {letter.message.id: letter for letter in letters}
        assert by_id[rejected.id].reason.queue == sub.queue
        assert by_id[rejected.id].reason.error_type == "BrokerDeadLettered"
        assert await broker.replay_dead_letters("svc", [rejected.id]) == 1
    finally:
        await broker.destroy()
        await broker.close()
