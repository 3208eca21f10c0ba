"""The ``nats://`` JetStream adapter: names, URL, wire, errors, consuming and settling.

Broker restarts are covered by the conformance scenario
``broker_restart_under_load_loses_nothing``; outages here go through a TCP relay
(:class:`.support.Relay`), never through the shared server.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import api

from herald.broker import Delivery, Prefetch, Subscription
from herald.brokers import broker_from_url
from herald.brokers.nats import NATSBroker, NATSSettings
from herald.brokers.nats.errors import TABLE, is_too_large
from herald.brokers.nats.topology import Names, consumer_name, safe_token
from herald.brokers.nats.wire import from_headers, to_headers
from herald.deadletter import DeadLetterReason
from herald.errors import (
    BrokerError,
    BrokerURLError,
    ConfigurationError,
    ConnectionLostError,
    DecodeError,
    HeaderError,
    MessageTooLargeError,
    PublishError,
)
from herald.message import Message
from herald.testing import eventually

from .support import (
    Relay,
    connected,
    counts_become,
    nats_url,
    next_delivery,
    number,
    require_nats,
    tick,
)

pytestmark = pytest.mark.nats
SUB = Subscription("payroll", "employee.created")


async def in_flight(broker: NATSBroker, queue: str = SUB.queue) -> tuple[int, int | None]:
    (stats,) = await broker.inspect_queues([queue])
    return stats.depth, stats.in_flight


async def pending(stream: AsyncIterator[Delivery]) -> asyncio.Future[Delivery]:
    future = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(1.0)  # time enough for a delivery that should not come
    return future


# --- names, URL, wire and errors: no server needed --------------------------------------


def test_subjects_streams_and_consumers_follow_the_wire_conventions() -> None:
    plain, spaced = Names(), Names("acme.test")
    assert plain.event_subject("employee.created") == "events.employee.created"
    assert plain.streams.all() == ("EVENTS", "EVENTS_REPLAY", "EVENTS_DLQ")
    assert spaced.event_subject("employee.created") == "acme.test.events.employee.created"
    assert spaced.streams.events == "acme_test_EVENTS"
    assert spaced.dlq_subject("payroll") == "acme.test.dlq.payroll"
    assert spaced.replay_subject("payroll.employee.created") == (
        "acme.test.replay.payroll_employee_created"
    )
    assert spaced.event_type("acme.test.events.a.b") == "a.b"
    assert spaced.event_type("acme.test.replay.x") is None
    assert Names(stream="HR").streams.all() == ("HR", "HR_REPLAY", "HR_DLQ")
    assert consumer_name("payroll.employee.created") == "payroll_employee_created"
    assert "." not in consumer_name("pay roll.a_b")
    assert safe_token("a.b") != safe_token("a_b"), "lossy names get a distinguishing hash"
    assert ">" not in safe_token("a.>") and "*" not in safe_token("a.*")


@pytest.mark.parametrize("bad", ["employee.*", "employee.#", "a b", "a\r\nPUB x 1", "", "a..b"])
def test_only_plain_event_types_become_subjects(bad: str) -> None:
    with pytest.raises(PublishError, match="not an event type"):
        Names("ns").event_subject(bad)


def test_patterns_become_filters_and_unsupported_ones_are_refused() -> None:
    names = Names("ns")
    assert names.filter_subject(("employee.created",)) == "ns.events.employee.created"
    assert names.filter_subject(("employee.*",)) == "ns.events.employee.*"
    assert names.filter_subject(("employee.#",)) == "ns.events.employee.>"
    assert names.filter_subject(("#",)) == "ns.events.>"
    with pytest.raises(ConfigurationError, match="'#' is only supported as the last word"):
        names.filter_subject(("#.created",))
    with pytest.raises(ConfigurationError, match="single filter subject"):
        names.filter_subject(("employee.created", "employee.updated"))


def test_url_options_are_checked() -> None:
    broker = broker_from_url("tls://u:s3cret@h1,h2:4333/?namespace=x&ack_wait=5&max_deliver=9")
    assert isinstance(broker, NATSBroker)
    assert broker.settings.servers == ["tls://h1:4222", "tls://h2:4333"]
    assert broker.settings.tls and broker.settings.ack_wait == 5.0
    assert broker.settings.max_deliver == 9
    assert broker.settings.dlq_retention == 14 * 24 * 3600
    assert "s3cret" not in repr(broker)
    assert (broker.settings.replicas, broker.settings.heartbeat) == (1, 10.0)
    cluster = broker_from_url("nats://h1:1,h2:2,h3:3/?replicas=3&heartbeat=2.5")
    assert isinstance(cluster, NATSBroker)
    assert cluster.settings.servers == ["nats://h1:1", "nats://h2:2", "nats://h3:3"]
    assert (cluster.settings.replicas, cluster.settings.heartbeat) == (3, 2.5)
    forever = broker_from_url("nats://h/?dlq_retention=0")
    assert isinstance(forever, NATSBroker) and forever.settings.dlq_retention == 0
    for url, part in [
        ("nats://h/?prefetch=3", "prefetch"),
        ("nats://h/?namespace=a*b", "namespace"),
        ("nats://h/?retention=workqueue", "retention"),
        ("nats://h/?dlq_retention=-1", "dlq_retention"),
        ("nats:///?namespace=x", "host"),
        ("nats://h/?replicas=0", "replicas"),
        ("nats://h/?replicas=6", "replicas"),
        ("nats://h/?replicas=three", "replicas"),
        ("nats://h/?heartbeat=0", "heartbeat"),
    ]:
        with pytest.raises(BrokerURLError, match=part):
            broker_from_url(url)
    interest = broker_from_url("nats://h/?retention=interest")
    assert isinstance(interest, NATSBroker) and interest.settings.max_age == 0
    assert broker.settings.retention == "limits" and broker.settings.max_age == 7 * 24 * 3600


def test_declared_features() -> None:
    features = NATSBroker.features
    assert features.release_counts_attempt and features.counts_redelivery
    assert not features.retry_headers
    assert features.max_message_bytes == 1024 * 1024 - 8 * 1024


def test_headers_survive_nats_header_rules() -> None:
    message = Message(
        type="a.b", body=b"{}", subject="k", headers={"why": "line 1\r\nline 2", "u": " é "}
    )
    headers = to_headers(message)
    assert all("\n" not in v and v.isascii() and v == v.strip() for v in headers.values())
    assert headers["ce-type"] == "a.b" and headers["Nats-Msg-Id"] == message.id
    back = from_headers({**headers, "Nats-Sequence": "4"}, b"{}", None, "unused")
    assert back == message


def test_header_names_that_nats_cannot_carry_are_refused_both_ways() -> None:
    with pytest.raises(PublishError, match="header name 'my header'"):
        to_headers(Message(type="a.b", body=b"{}", headers={"my header": "1"}))
    with pytest.raises(HeaderError, match="not a NATS header token"):
        from_headers({"cloudEvents_type": "a.b", "bad:name": "1"}, b"{}", None, "id")
    with pytest.raises(DecodeError, match="base64"):
        from_headers({"Herald-B64": "x", "x": "!!"}, b"{}", "a.b", "id")


def test_error_table_converts_driver_errors_without_secrets() -> None:
    cases = [
        (nats.errors.ConnectionClosedError(), ConnectionLostError),
        (nats.errors.NoServersError(), ConnectionLostError),
        (nats.errors.TimeoutError(), ConnectionLostError),
        (nats.errors.BadHeaderError("a b"), PublishError),
        (nats.js.errors.NoStreamResponseError(), PublishError),
        (nats.js.errors.APIError(code=500, description="boom"), BrokerError),
        (ValueError("odd"), BrokerError),
    ]
    for exc, kind in cases:
        converted = TABLE.convert(exc, "doing it")
        assert type(converted) is kind, (exc, converted)
        assert str(converted).startswith("doing it failed: ")
    timeout = TABLE.convert(nats.errors.TimeoutError(), "publishing", PublishError)
    assert type(timeout) is PublishError
    secret = TABLE.convert(OSError("cannot reach nats://ada:s3cret@h1:4222"), "connecting")
    assert "s3cret" not in str(secret) and "ada:***@h1" in str(secret)
    assert is_too_large(nats.js.errors.APIError(code=400, err_code=10054))
    assert not is_too_large(nats.js.errors.APIError(code=400, err_code=10071))


async def test_unreachable_server_fails_without_the_password() -> None:
    broker = broker_from_url("nats://ada:s3cret@127.0.0.1:1/?timeout=1")
    with pytest.raises(ConnectionLostError) as caught:
        await broker.connect()
    assert "s3cret" not in str(caught.value) and "ada:***@" in str(caught.value)


# --- against the server --------------------------------------------------------------


async def test_publish_consume_ack_and_late_queue(broker: NATSBroker) -> None:
    await broker.publish([tick(0)])  # no queue bound yet: confirmed, then dropped
    await broker.declare(SUB)
    await broker.publish([tick(n) for n in range(1, 4)])
    late = Subscription("gifts", "employee.*")
    await broker.declare(late)
    await broker.publish([tick(4)])
    stream = broker.consume(SUB, Prefetch(8))
    seen = []
    for _ in range(4):
        delivery = await next_delivery(stream)
        seen.append(number(delivery))
        assert delivery.attempt == 1 and delivery.error is None
        await delivery.ack()
    assert seen == [1, 2, 3, 4]
    late_stream = broker.consume(late, Prefetch(8))
    delivery = await next_delivery(late_stream)
    assert number(delivery) == 4, "a queue gets what came after its declare"
    await delivery.ack()
    await stream.aclose()
    await late_stream.aclose()


async def test_retries_and_releases_come_back_as_the_next_attempt(broker: NATSBroker) -> None:
    await broker.declare(SUB)
    await broker.publish([tick(1)])
    stream = broker.consume(SUB, Prefetch(4))
    first = await next_delivery(stream)
    assert first.attempt == 1
    await first.retry(1.5, {"herald-last-error": "not carried on NATS"})
    await broker.publish([tick(2)])
    overtaking = await next_delivery(stream)
    assert (number(overtaking), overtaking.attempt) == (2, 1), "the retry waits its delay"
    await overtaking.ack()
    second = await next_delivery(stream)
    assert (second.message.id, second.attempt) == (first.message.id, 2)
    assert "herald-last-error" not in second.message.headers
    await second.release()
    third = await next_delivery(stream)
    assert third.attempt == 3, "a release counts an attempt (release_counts_attempt)"
    await third.ack()
    await stream.aclose()


async def test_a_crashed_consumers_delivery_comes_back_as_the_next_attempt(
    relay: Relay,
) -> None:
    namespace = f"tn{uuid.uuid4().hex[:8]}"
    crashing = await connected(nats_url(port=relay.port, namespace=namespace, ack_wait="1"))
    survivor = await connected(nats_url(namespace=namespace, ack_wait="1"))
    try:
        await survivor.declare(SUB)
        await survivor.publish([tick(1)])
        stream = crashing.consume(SUB, Prefetch(4))
        taken = await next_delivery(stream)
        await relay.cut()  # to the server, the consumer is gone: its leases stop
        again = survivor.consume(SUB, Prefetch(4))
        delivery = await next_delivery(again)
        assert (delivery.message.id, delivery.attempt) == (taken.message.id, 2)
        await delivery.ack()
        await again.aclose()
        await relay.restore()
        await stream.aclose()
        await crashing.close()
    finally:
        await survivor.destroy()
        await survivor.close()


async def test_closing_the_broker_gives_back_what_it_holds_at_once() -> None:
    require_nats()
    url = nats_url(ack_wait="60")  # far longer than next_delivery waits
    closing, survivor = await connected(url), await connected(url)
    try:
        await survivor.declare(SUB)
        await survivor.publish([tick(1), tick(2)])
        stream = closing.consume(SUB, Prefetch(1))
        taken = await next_delivery(stream)  # handed out; the second one waits in the feed
        await closing.close()  # nothing can settle it any more
        await stream.aclose()
        again = survivor.consume(SUB, Prefetch(4))
        first, second = await next_delivery(again), await next_delivery(again)
        assert (first.message.id, first.attempt) == (taken.message.id, 2)
        assert number(second) == 2, "given back in order"
        await first.ack()
        await second.ack()
        await again.aclose()
    finally:
        await survivor.destroy()
        await survivor.close()


async def test_a_release_after_the_consumer_stopped_counts_once(broker: NATSBroker) -> None:
    """nats-server 2.9.10 rolls a consumer back when a message is given back while a
    pull request of a closed inbox is still registered: the message would come back
    as a first attempt, counted as both waiting and in flight."""
    await broker.declare(SUB)
    await broker.publish([tick(1)])
    stream = broker.consume(SUB, Prefetch(4))
    taken = await next_delivery(stream)
    await stream.aclose()  # as a worker stops: the consumer first, then the release
    await taken.release()
    await counts_become(broker, SUB.queue, (1, 0, 0))
    again = broker.consume(SUB, Prefetch(4))
    delivery = await next_delivery(again)
    assert (delivery.message.id, delivery.attempt) == (taken.message.id, 2)
    await delivery.ack()
    await again.aclose()
    await counts_become(broker, SUB.queue, (0, 0, 0))


async def test_a_held_delivery_is_not_redelivered_while_its_holder_lives() -> None:
    require_nats()
    url = nats_url(ack_wait="1")
    holder, other = await connected(url), await connected(url)
    try:
        await holder.declare(SUB)
        await holder.publish([tick(1)])
        held_stream = holder.consume(SUB, Prefetch(1))
        held = await next_delivery(held_stream)
        other_stream = other.consume(SUB, Prefetch(4))
        waiting = asyncio.ensure_future(anext(other_stream))
        await asyncio.sleep(3.5)  # three ack_waits: the +WIP leases must keep it
        assert not waiting.done(), "redelivered to another consumer while its holder lives"
        assert await in_flight(holder) == (0, 1)
        await held.ack()
        await held_stream.aclose()
        await holder.publish([tick(2)])
        after = await asyncio.wait_for(waiting, 10)
        assert (number(after), after.attempt) == (2, 1), "the other consumer was pulling"
        await after.ack()
        await other_stream.aclose()
    finally:
        await holder.destroy()
        await holder.close()
        await other.close()


async def test_releasing_then_stopping_at_once_keeps_the_counts_exact(
    broker: NATSBroker,
) -> None:
    """The releases free slots, the feed sends a pull, and the consumer stops right
    away: nats-server 2.9.10 must not hand the released messages to that pull after
    its inbox is gone (it would roll the consumer back, see the test above: a message
    counted twice, a release coming back as a first attempt). What the pull brought
    in is given back with the rest, as its next attempt."""
    for round_ in range(10):
        queue = Subscription("payroll", f"round{round_}", ("employee.created",))
        await broker.declare(queue)
        await broker.publish([tick(n) for n in range(5)])
        taken: list[Delivery] = []

        async def take(queue: Subscription = queue, taken: list[Delivery] = taken) -> None:
            async for delivery in broker.consume(queue, Prefetch(messages=2)):
                taken.append(delivery)

        taker = asyncio.create_task(take())
        await eventually(lambda taken=taken: len(taken) == 2, 20, "two taken")  # type: ignore[misc]
        for delivery in taken[:2]:
            await delivery.release()
        taker.cancel()  # as a worker stops: right after the releases
        await asyncio.gather(taker, return_exceptions=True)
        await counts_become(broker, queue.queue, (5, 0, 0))
        again = broker.consume(queue, Prefetch(messages=8))
        seen = [await next_delivery(again) for _ in range(5)]
        assert sorted(number(d) for d in seen) == [0, 1, 2, 3, 4], f"round {round_}"
        attempts = {number(d): d.attempt for d in seen}
        assert min(attempts[0], attempts[1]) >= 2, f"round {round_}: {attempts}"
        for delivery in seen:
            await delivery.ack()
        await again.aclose()
        await counts_become(broker, queue.queue, (0, 0, 0))


async def test_the_window_bounds_unsettled_messages(broker: NATSBroker) -> None:
    await broker.declare(SUB)
    await broker.publish([tick(n) for n in range(5)])
    stream = broker.consume(SUB, Prefetch(messages=2))
    first, second = await next_delivery(stream), await next_delivery(stream)
    third = await pending(stream)
    assert not third.done()
    assert await in_flight(broker) == (3, 2), "only two were pulled from JetStream"
    await first.ack()
    assert number(await asyncio.wait_for(third, 10)) == 2
    await second.ack()
    await stream.aclose()


async def test_the_window_bounds_unsettled_bytes(broker: NATSBroker) -> None:
    """Bodies are handed out while those held stay under ``prefetch.bytes``, as
    ``herald.window.Window`` counts: three 4 kB bodies in 10 kB, not a fourth. The
    pull's ``max_bytes`` also counts subjects and headers, so the third arrives only
    because it is asked for alone once the window still has room."""
    await broker.declare(SUB)
    await broker.publish([tick(n, size=4000) for n in range(5)])
    stream = broker.consume(SUB, Prefetch(messages=100, bytes=10_000))
    held = [await next_delivery(stream) for _ in range(3)]
    fourth = await pending(stream)
    assert not fourth.done()
    assert await in_flight(broker) == (2, 3), "only three were pulled from JetStream"
    await held[0].ack()
    assert number(await asyncio.wait_for(fourth, 10)) == 3
    fifth = await pending(stream)
    assert not fifth.done(), "one settled makes room for exactly one"
    fifth.cancel()
    await asyncio.gather(fifth, return_exceptions=True)
    await stream.aclose()


async def test_a_body_larger_than_the_byte_window_flows_alone(broker: NATSBroker) -> None:
    await broker.declare(SUB)
    await broker.publish([tick(n, size=3000) for n in range(3)])
    stream = broker.consume(SUB, Prefetch(messages=10, bytes=1000))
    delivery = await next_delivery(stream)
    for n in range(3):
        assert number(delivery) == n
        if n == 2:
            await delivery.ack()
            break
        following = await pending(stream)
        assert not following.done() and await in_flight(broker) == (2 - n, 1)
        await delivery.ack()
        delivery = await asyncio.wait_for(following, 10)
    await stream.aclose()


async def test_a_failed_settlement_frees_its_slot_and_the_message_returns(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    url = nats_url(port=relay.port, ack_wait="1")
    broker = await connected(url)
    try:
        await broker.declare(SUB)
        await broker.publish([tick(1)])
        stream = broker.consume(SUB, Prefetch(messages=1))
        taken = await next_delivery(stream)
        with caplog.at_level(logging.WARNING, logger="herald.brokers.nats"):
            await relay.cut()
            await eventually(lambda: "disconnected" in caplog.text, 20, "the client to notice")
        with pytest.raises(ConnectionLostError, match="redelivered after ack_wait"):
            await taken.ack()
        await relay.restore()
        again = await next_delivery(stream, timeout=30)
        assert (again.message.id, again.attempt) == (taken.message.id, 2)
        await again.ack()
        await stream.aclose()
    finally:
        await broker.destroy()
        await broker.close()


async def test_undecodable_messages_are_deliveries_with_an_error(
    broker: NATSBroker, raw: Client
) -> None:
    await broker.declare(SUB)
    subject = broker.names.event_subject("employee.created")
    js = raw.jetstream()
    await js.publish(subject, b"\x00raw", headers={"cloudEvents_time": "not a time"})
    await js.publish(subject, b"{}", headers={"Herald-B64": "x", "x": "!!"})
    stream = broker.consume(SUB, Prefetch(4))
    bad_time, bad_base64 = await next_delivery(stream), await next_delivery(stream)
    assert isinstance(bad_time.error, DecodeError) and "time" in str(bad_time.error)
    assert isinstance(bad_base64.error, DecodeError) and "base64" in str(bad_base64.error)
    kept = bad_time.message
    assert (kept.type, kept.body, kept.headers) == (
        "employee.created",
        b"\x00raw",
        {"herald-raw-cloudEvents_time": "not a time"},
    )
    assert bad_time.attempt == 1 and bad_time.message.id != bad_base64.message.id
    now = bad_time.message.time
    reason = DeadLetterReason(SUB.queue, "DecodeError", str(bad_time.error), 1, now, now)
    await bad_time.dead_letter(reason)
    await bad_base64.ack()
    (letter,) = await broker.dead_letters("payroll")
    assert letter.message.body == b"\x00raw" and letter.reason.error_type == "DecodeError"
    await stream.aclose()


async def test_size_limits_hold_exactly(broker: NATSBroker, raw: Client) -> None:
    limit = broker.features.max_message_bytes
    assert limit == raw.max_payload - 8 * 1024, "derived from the server's max_payload"
    await broker.declare(SUB)
    largest = Message(type="employee.created", body=b"x" * limit)
    await broker.publish([largest])
    with pytest.raises(MessageTooLargeError):
        await broker.publish([Message(type="employee.created", body=b"x" * (limit + 1))])
    padded = Message(type="employee.created", body=b"x" * limit, headers={"pad": "p" * 3000})
    with pytest.raises(MessageTooLargeError, match="headers"):
        await broker.publish([padded, tick(9)])
    stream = broker.consume(SUB, Prefetch(4))
    delivery = await next_delivery(stream)
    assert delivery.message == largest
    long_error = "é" * 4000 + "\nsecond line"
    reason = DeadLetterReason(SUB.queue, "ValueError", long_error, 1)
    await delivery.dead_letter(reason)
    (letter,) = await broker.dead_letters("payroll")
    assert letter.message == largest, "the largest message can always be dead-lettered"
    assert long_error.startswith(letter.reason.error_message) and letter.reason.error_message
    await broker.publish([tick(1)])  # the connection survived all of it
    assert number(await next_delivery(stream)) == 1, "nothing of the refused batch was sent"
    await stream.aclose()


async def test_a_stream_refusing_the_size_raises_message_too_large(raw: Client) -> None:
    url = nats_url(namespace=f"tnsize{uuid.uuid4().hex[:8]}")
    names = NATSSettings.from_url(url).names
    await raw.jetstream().add_stream(
        api.StreamConfig(
            name=names.streams.events, subjects=[names.events_wildcard], max_msg_size=2000
        )
    )
    broker = await connected(url)  # leaves an existing stream as it is
    try:
        with pytest.raises(MessageTooLargeError, match="max_msg_size") as caught:
            await broker.publish([tick(1, size=3000)])
        assert 0 < caught.value.limit < 2000
        await broker.publish([tick(2)])
    finally:
        await broker.destroy()
        await broker.close()


async def test_what_cannot_be_a_subject_is_refused(broker: NATSBroker, raw: Client) -> None:
    seen: list[str] = []

    async def record(msg: object) -> None:
        seen.append(getattr(msg, "subject", "?"))

    probe = await raw.subscribe(f"{broker.names.prefix}>", cb=record)
    for bad in ("employee.*", "employee.>", "a b", "a\r\nPUB employee.deleted 1"):
        with pytest.raises(PublishError):
            await broker.publish([Message(type=bad, body=b"{}")])
    with pytest.raises(PublishError, match="header name"):
        await broker.publish([Message(type="a.b", body=b"{}", headers={"x y": "1"})])
    await raw.flush()
    await probe.unsubscribe()
    assert seen == []


async def test_rebinding_a_queue_is_refused_and_deleted_streams_come_back(
    broker: NATSBroker,
) -> None:
    await broker.declare(Subscription("payroll", "q", ("employee.created",)))
    with pytest.raises(ConfigurationError, match="one filter"):
        await broker.declare(Subscription("payroll", "q", ("employee.updated",)))
    await broker.destroy()
    await broker.publish([tick(1)])  # the streams are created again
    await broker.declare(SUB)
    await broker.publish([tick(2)])
    stream = broker.consume(SUB, Prefetch(4))
    assert number(await next_delivery(stream)) == 2
    await stream.aclose()
