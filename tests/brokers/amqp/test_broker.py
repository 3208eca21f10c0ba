"""The RabbitMQ adapter: names, confirms, recovery, redaction and Ruby interop.

Needs RabbitMQ on 127.0.0.1:5672 (guest/guest): fails when CI=true and it is
missing, skips otherwise. Every test works in its own ``namespace=``. The restart
test stops and starts the RabbitMQ application (always starting it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import aiormq
import pytest
from aiormq.abc import AbstractConnection

import herald
from herald.broker import Delivery, Subscription
from herald.brokers import broker_from_url
from herald.brokers.amqp import AMQPBroker
from herald.brokers.amqp_settings import AMQPSettings
from herald.brokers.amqp_topology import DELAY_BUCKETS_MS, Topology, delay_bucket
from herald.brokers.amqp_wire import attempt_of
from herald.deadletter import FIRST_FAILURE, DeadLetterReason
from herald.errors import BrokerError, BrokerURLError, ConnectionLostError, PublishError
from herald.message import Message
from herald.url import BrokerURL

from ...servers import IN_CI, port_open

pytestmark = pytest.mark.amqp

SERVER = "amqp://guest:guest@127.0.0.1:5672/"
INTEROP = Path(__file__).parent / "interop"


def require_server() -> None:
    if port_open(5672):
        return
    if IN_CI:
        pytest.fail("RabbitMQ not reachable on 127.0.0.1:5672 (CI=true: it must run)")
    pytest.skip("RabbitMQ not reachable on 127.0.0.1:5672")


def require_bunny() -> None:
    found = shutil.which("ruby") is not None and (
        subprocess.run(
            ["ruby", "-e", "require 'bunny'"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if found:
        return
    if IN_CI:
        pytest.fail("ruby with the bunny gem is needed (apt-get install ruby-bunny)")
    pytest.skip("ruby with the bunny gem is not installed")


def settings(url: str) -> AMQPSettings:
    return AMQPSettings.from_url(BrokerURL.parse(url))


@pytest.fixture
def namespace() -> str:
    return f"ta{uuid.uuid4().hex[:10]}"


@pytest.fixture
def url(namespace: str) -> str:
    require_server()
    return f"{SERVER}?namespace={namespace}&reconnect_timeout=30"


@pytest.fixture
async def broker(url: str) -> AsyncIterator[AMQPBroker]:
    broker = broker_from_url(url)
    assert isinstance(broker, AMQPBroker)
    await broker.connect()
    try:
        yield broker
    finally:
        cleaner = broker_from_url(url)
        try:
            await cleaner.connect()
            await cleaner.destroy()
        finally:
            await cleaner.close()
            await broker.close()


@pytest.fixture
async def raw() -> AsyncIterator[AbstractConnection]:
    require_server()
    connection = await aiormq.connect(SERVER)
    try:
        yield connection
    finally:
        await connection.close()


async def queue_exists(raw: AbstractConnection, name: str) -> bool:
    channel = await raw.channel()
    try:
        await channel.queue_declare(name, passive=True)
        return True
    except aiormq.ChannelNotFoundEntity:
        return False
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def next_of(stream: AsyncGenerator[Delivery, None], timeout: float = 10.0) -> Delivery:
    return await asyncio.wait_for(anext(stream), timeout)


async def rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def close_connections_of(namespace: str) -> int:
    """Close, from the server side, every connection Herald opened for ``namespace``."""
    listing = await rabbitmqctl("list_connections", "pid", "client_properties", "-q")
    pids = [line.split("\t")[0] for line in listing.splitlines() if f"ns={namespace} " in line]
    for pid in pids:
        await rabbitmqctl("close_connection", pid, "herald test: connection drop")
    return len(pids)


# --- no server needed ---------------------------------------------------------


def test_url_options_and_names() -> None:
    s = settings(
        "amqp://u:pw@h1:5672,h2:5673/vh?namespace=ns&queue_type=quorum&heartbeat=5"
        "&prefetch=7&confirm_timeout=2&reconnect_timeout=3&exchange=bus"
    )
    assert s.endpoints == (("h1", 5672), ("h2", 5673))
    assert (s.vhost, s.exchange, s.queue_type, s.heartbeat, s.prefetch) == (
        "vh",
        "ns.bus",
        "quorum",
        5,
        7,
    )
    assert (s.confirm_timeout, s.reconnect_timeout) == (2.0, 3.0)
    assert s.name("payroll.employee.created") == "ns.payroll.employee.created"
    assert s.driver_url("h1", 5672).query["heartbeat"] == "5"
    assert s.driver_url("h1", 5672).path == "/vh"
    assert "pw" not in str(s) and "pw" not in repr(s)

    plain = settings("amqp://127.0.0.1")
    topology = Topology(plain)
    sub = Subscription("payroll", "employee.created")
    assert (plain.vhost, plain.exchange, plain.endpoints) == ("/", "events", (("127.0.0.1", 5672),))
    assert plain.name(sub.queue) == "payroll.employee.created"
    assert plain.name(sub.dead_letter_queue) == "payroll.dlq"
    assert topology.retry_queue_name(sub.queue, 500) == "payroll.employee.created.retry.500ms"
    assert topology.queue_arguments() == {}
    assert Topology(settings("amqp://h/?queue_type=quorum")).queue_arguments() == {
        "x-queue-type": "quorum"
    }
    assert settings("amqps://h").endpoints == (("h", 5671),)
    assert settings("amqp://h/%2F").vhost == "/"


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("amqp://h/?exchnage=x", "query parameter 'exchnage'"),
        ("amqp://h/?queue_type=stream", "query parameter 'queue_type'"),
        ("amqp://h/?cafile=/ca.pem", "scheme"),
        ("amqp://h/?heartbeat=soon", "query parameter 'heartbeat'"),
    ],
)
def test_bad_urls_are_rejected(url: str, part: str) -> None:
    with pytest.raises(BrokerURLError) as info:
        broker_from_url(url)
    assert info.value.part == part


def test_tls_context() -> None:
    context = settings("amqps://h/?verify=false").ssl_context()
    assert context is not None and context.verify_mode == ssl.CERT_NONE
    verified = settings("amqps://h").ssl_context()
    assert verified is not None and verified.verify_mode == ssl.CERT_REQUIRED
    assert settings("amqp://h").ssl_context() is None


def test_delays_round_to_a_small_ladder() -> None:
    assert delay_bucket(0) == 0 and delay_bucket(0.01) == 0
    assert delay_bucket(0.5) == 500 and delay_bucket(0.6) == 500 and delay_bucket(0.8) == 1000
    assert delay_bucket(10**6) == DELAY_BUCKETS_MS[-1]
    assert len(DELAY_BUCKETS_MS) <= 12
    assert {delay_bucket(0.5 * 2**n) for n in range(12)} <= set(DELAY_BUCKETS_MS)


def test_attempt_counting() -> None:
    assert attempt_of({}, redelivered=False) == 1
    assert attempt_of({}, redelivered=True) == 2
    assert attempt_of({}, redelivered=True, released=1) == 1
    assert attempt_of({"herald-attempt": 3}, redelivered=False) == 3
    assert attempt_of({"herald-attempt": b"3", "x-delivery-count": 2}, redelivered=True) == 5
    assert attempt_of({"x-delivery-count": 2}, redelivered=True, released=1) == 2


# --- with RabbitMQ -------------------------------------------------------------


async def test_topology_names_and_destroy(
    broker: AMQPBroker, raw: AbstractConnection, namespace: str, url: str
) -> None:
    sub = Subscription("payroll", "employee-events", ("employee.*",))
    await broker.declare(sub)
    await broker.declare(sub)  # idempotent
    await broker.publish([Message(type="employee.created", body=b"{}")])
    stream = broker.consume(sub, 4)
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

    stream = broker.consume(sub, 50)
    received = []
    for _ in sent:
        delivery = await next_of(stream)
        received.append(delivery)
        await delivery.ack()
    await stream.aclose()
    assert [d.message for d in received] == sent
    assert {d.attempt for d in received} == {1}

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


async def test_nack_raises_publish_error(broker: AMQPBroker, raw: AbstractConnection) -> None:
    full = broker.settings.name("full")
    channel = await raw.channel()
    args = {"x-max-length": 1, "x-overflow": "reject-publish"}
    await channel.queue_declare(full, exclusive=True, arguments=args)
    await channel.queue_bind(full, broker.settings.exchange, routing_key="overflow.*")
    await broker.publish([Message(type="overflow.one", body=b"1")])
    with pytest.raises(PublishError, match="nack"):
        await broker.publish([Message(type="overflow.two", body=b"2")])
    await broker.publish([Message(type="unbound.type", body=b"3")])  # unroutable: fine
    with pytest.raises(PublishError, match="limit"):
        await broker.publish([Message(type="big.one", body=b"x" * (16 * 1024 * 1024 + 1))])
    await channel.close()


async def test_concurrent_single_publishes_each_get_their_own_outcome(
    broker: AMQPBroker, raw: AbstractConnection
) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    full = broker.settings.name("full")
    channel = await raw.channel()
    args = {"x-max-length": 1, "x-overflow": "reject-publish"}
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
    stream = broker.consume(sub, 200)
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
    stream = broker.consume(sub, 10)
    first = await next_of(stream)
    assert first.attempt == 1
    started = time.monotonic()
    await first.retry(0.25, {FIRST_FAILURE: "then", "b": "2"})
    second = await next_of(stream)
    assert time.monotonic() - started >= 0.2
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
    await broker.publish([Message(type="job.created", body=b"{}")])
    stream = broker.consume(sub, 10)
    first = await next_of(stream)
    await first.release()
    again = await next_of(stream)
    assert (again.message.id, again.attempt) == (first.message.id, 1)
    await stream.aclose()
    await again.release()

    crashing = broker_from_url(url)
    await crashing.connect()
    doomed = crashing.consume(sub, 10)
    taken = await next_of(doomed)
    assert taken.attempt == 1
    await crashing.close()  # dies holding the delivery: the broker redelivers it
    stream = broker.consume(sub, 10)
    redelivered = await next_of(stream)
    assert (redelivered.message.id, redelivered.attempt) == (first.message.id, 2)
    await redelivered.ack()
    await stream.aclose()
    with pytest.raises(ConnectionLostError):
        await taken.ack()


async def test_closed_consumer_keeps_channel_for_outstanding_acks(broker: AMQPBroker) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    sent = [Message(type="job.created", body=str(n).encode()) for n in range(5)]
    await broker.publish(sent)
    stream = broker.consume(sub, 10)
    held = await next_of(stream)
    await stream.aclose()  # the other four were prefetched: they go back unhandled
    await held.ack()
    stream = broker.consume(sub, 10)
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


async def test_prefetch_bounds_unsettled_deliveries(
    broker: AMQPBroker, raw: AbstractConnection
) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    await broker.publish([Message(type="job.created", body=str(n).encode()) for n in range(10)])
    stream = broker.consume(sub, 3)
    held = [await next_of(stream) for _ in range(3)]
    channel = await raw.channel()
    ok = await channel.queue_declare(broker.settings.name(sub.queue), passive=True)
    assert ok.message_count == 7  # the broker holds back all but the prefetch window
    await held[0].ack()
    fourth = await next_of(stream)
    assert fourth.message.body == b"3"
    for delivery in [*held[1:], fourth]:
        await delivery.ack()
    await channel.close()
    await stream.aclose()


async def test_dead_letters_list_replay_purge(broker: AMQPBroker) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    sent = [Message(type="job.created", body=str(n).encode()) for n in range(3)]
    await broker.publish(sent)
    stream = broker.consume(sub, 10)
    for _ in sent:
        delivery = await next_of(stream)
        await delivery.dead_letter(DeadLetterReason(sub.queue, "KeyError", "'x'", 5))

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
    replayed = await next_of(stream)
    assert (replayed.message, replayed.attempt) == (sent[1], 1)
    await replayed.ack()
    assert progress == [(1, 1)]

    assert await broker.purge_dead_letters("svc", [sent[0].id]) == 1
    assert [d.message.id for d in await broker.dead_letters("svc")] == [sent[2].id]
    assert await broker.purge_dead_letters("svc") == 1
    assert await broker.dead_letters("svc") == []
    await stream.aclose()


async def test_foreign_messages_and_undecodable_ones(
    broker: AMQPBroker, raw: AbstractConnection
) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    channel = await raw.channel()
    exchange = broker.settings.exchange
    bad = aiormq.spec.Basic.Properties(headers={"cloudEvents_time": "yesterday-ish"})
    await channel.basic_publish(
        b"bad", exchange=exchange, routing_key="job.created", properties=bad
    )
    plain = aiormq.spec.Basic.Properties(
        content_type="text/plain",
        message_id="m-1",
        headers={"count": 3, "blob": bytearray(b"raw"), "flag": True},
    )
    await channel.basic_publish(
        b"ok", exchange=exchange, routing_key="job.created", properties=plain
    )
    await channel.close()

    stream = broker.consume(sub, 10)
    delivery = await next_of(stream)
    assert delivery.message.body == b"ok"
    assert (delivery.message.type, delivery.message.id) == ("job.created", "m-1")
    assert delivery.message.datacontenttype == "text/plain"
    assert dict(delivery.message.headers) == {"count": "3", "blob": "raw", "flag": "true"}
    await delivery.ack()
    await stream.aclose()
    [letter] = await broker.dead_letters("svc")
    assert letter.message.body == b"bad"
    assert letter.reason.error_type == "DecodeError"
    assert letter.reason.queue == sub.queue


async def test_transient_subscription_keeps_messages_from_declare_and_vanishes(
    broker: AMQPBroker, raw: AbstractConnection
) -> None:
    sub = Subscription("tail-x", "all", ("#",), durable=False)
    await broker.declare(sub)
    await broker.publish([Message(type="any.thing", body=b"1")])
    stream = broker.consume(sub, 10)
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
    stream = broker.consume(sub, 100)
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


async def test_consumer_cancelled_by_broker_resubscribes(
    broker: AMQPBroker, raw: AbstractConnection
) -> None:
    sub = Subscription("svc", "job.created")
    await broker.declare(sub)
    stream = broker.consume(sub, 10)
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
    stream = broker.consume(sub, 10)
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
        stream = broker.consume(sub, 1)
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
    url = f"{SERVER}?namespace={namespace}&queue_type=quorum"
    broker = broker_from_url(url)
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
        stream = broker.consume(sub, 10)
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
        assert letters[1].message.id == rejected.id
        assert letters[1].reason.queue == sub.queue
        assert letters[1].reason.error_type == "BrokerDeadLettered"
        assert await broker.replay_dead_letters("svc", [rejected.id]) == 1
    finally:
        await broker.destroy()
        await broker.close()


@pytest.mark.restart
async def test_broker_restart_under_load_loses_nothing(broker: AMQPBroker, url: str) -> None:
    sub = Subscription("svc", "load.tick")
    await broker.declare(sub)
    impatient = broker_from_url(url.replace("reconnect_timeout=30", "reconnect_timeout=0.5"))
    await impatient.connect()
    idle = impatient.consume(Subscription("idle", "nothing.here"), 10)
    waiting = asyncio.ensure_future(anext(idle))
    sent: set[str] = set()
    seen: set[str] = set()
    stop = asyncio.Event()
    warmed_up = asyncio.Event()

    async def publish() -> None:
        while not stop.is_set():
            batch = [Message(type="load.tick", body=b"t") for _ in range(20)]
            await broker.publish(batch)
            sent.update(m.id for m in batch)
            await asyncio.sleep(0.01)

    async def consume() -> None:
        stream = broker.consume(sub, 64)
        try:
            async for delivery in stream:
                with contextlib.suppress(ConnectionLostError):
                    await delivery.ack()
                    seen.add(delivery.message.id)
                if len(seen) >= 200:
                    warmed_up.set()
        finally:
            await stream.aclose()

    publisher = asyncio.create_task(publish())
    consumer = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(warmed_up.wait(), 30)
        generation = broker.connection.generation
        try:
            await rabbitmqctl("stop_app")
            with pytest.raises(ConnectionLostError):  # it gives up after 0.5s, does not drop
                await impatient.publish([Message(type="load.tick", body=b"lost?")])
            with pytest.raises(ConnectionLostError):  # the worker then calls consume() again
                await asyncio.wait_for(waiting, 10)
            await asyncio.sleep(1.0)  # the outage
        finally:
            await rabbitmqctl("start_app")
        resumed_from = len(seen)
        deadline = time.monotonic() + 60
        while broker.connection.generation == generation or len(seen) < resumed_from + 200:
            assert time.monotonic() < deadline, "did not resume after the restart"
            await asyncio.sleep(0.05)
        stop.set()
        await publisher
        while not sent <= seen:
            assert time.monotonic() < deadline, f"{len(sent - seen)} messages lost"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        for task in (publisher, consumer, waiting):
            task.cancel()
        await asyncio.gather(publisher, consumer, waiting, return_exceptions=True)
        await idle.aclose()
        await impatient.close()


# --- Ruby (Bunny: Active Publisher / Action Subscriber) ----------------------


class EmployeeCreated(herald.Event, type="employee.created"):
    guid: str
    name: str = ""


async def test_bunny_publishes_herald_handles(url: str, namespace: str) -> None:
    require_bunny()
    service = herald.Service("payroll")
    events: asyncio.Queue[tuple[str, object]] = asyncio.Queue()

    @service.on(EmployeeCreated)
    async def created(event: EmployeeCreated, ctx: herald.Context) -> None:
        await events.put(("created", (event, ctx.message)))

    @service.on("document.*")
    async def uploaded(message: herald.Message) -> None:
        await events.put(("uploaded", message))

    async with herald.connect(url) as bus:
        try:
            worker = await bus.start(service)
            process = await asyncio.create_subprocess_exec(
                "ruby",
                str(INTEROP / "bunny_publish.rb"),
                SERVER.rstrip("/"),
                f"{namespace}.events",
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode == 0, err.decode()
            assert out.decode().strip() == "CONFIRMED"
            got = dict([await asyncio.wait_for(events.get(), 10) for _ in range(2)])
            await worker.stop()
        finally:
            await bus.broker.destroy()

    event, message = got["created"]  # type: ignore[misc]
    assert event == EmployeeCreated(guid="g-ruby-1", name="Ada")
    assert message.type == "employee.created" and message.datacontenttype == "application/json"
    document = got["uploaded"]
    assert isinstance(document, herald.Message)
    assert document.type == "document.uploaded"
    assert document.datacontenttype == "application/protobuf"
    assert document.body == b"\x0a\x07g-ruby-2\x10\x96\x01"


async def test_herald_publishes_bunny_consumes(url: str, namespace: str) -> None:
    require_bunny()
    queue = f"{namespace}.bunny.employee.created"
    process = await asyncio.create_subprocess_exec(
        "ruby",
        str(INTEROP / "bunny_consume.rb"),
        SERVER.rstrip("/"),
        f"{namespace}.events",
        queue,
        "employee.created",
        "1",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), 60)
        assert ready.decode().strip() == "READY"
        async with herald.connect(url) as bus:
            try:
                sent = await bus.publish(
                    EmployeeCreated(guid="g1", name="Ada"), key="g1", headers={"x-trace": "abc"}
                )
                line = await asyncio.wait_for(process.stdout.readline(), 30)
            finally:
                await bus.broker.destroy()
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    seen = json.loads(line)
    assert json.loads(seen["body"]) == {"guid": "g1", "name": "Ada"}
    assert seen["routing_key"] == "employee.created"
    assert seen["content_type"] == "application/json"
    assert seen["message_id"] == sent.id
    assert seen["type"] == "employee.created"
    assert seen["delivery_mode"] == 2
    assert abs(seen["timestamp"] - sent.time.timestamp()) < 2
    headers = seen["headers"]
    assert headers["cloudEvents_id"] == sent.id
    assert headers["cloudEvents_type"] == "employee.created"
    assert headers["cloudEvents_subject"] == "g1"
    assert headers["cloudEvents_specversion"] == "1.0"
    assert headers["cloudEvents_datacontenttype"] == "application/json"
    assert headers["x-trace"] == "abc"
