"""The RabbitMQ adapter without a server: URLs, names, header parsing, the error table."""

from __future__ import annotations

import random
import ssl
import urllib.error
from email.message import Message as MailHeaders
from typing import Any

import aiormq
import pytest

from herald.broker import Prefetch, Subscription
from herald.brokers import broker_from_url
from herald.brokers.amqp import AMQPBroker, AMQPSettings
from herald.brokers.amqp.credit import SIZES_SEEN, Flow, Ledger
from herald.brokers.amqp.errors import consumer_timed_out, error_table, too_large
from herald.brokers.amqp.topology import (
    DELAY_BUCKETS_MS,
    Topology,
    delay_bucket,
    is_reply_address,
    retry_queue_name,
)
from herald.brokers.amqp.wire import attempt_header, attempt_of, delivery_count
from herald.errors import (
    BrokerError,
    BrokerURLError,
    ConnectionLostError,
    HeaderError,
    PublishError,
)
from herald.errors import TimeoutError as HeraldTimeoutError

MiB = 1024 * 1024


def test_url_options_and_names() -> None:
    s = AMQPSettings.from_url(
        "amqp://u:pw@h1:5672,h2:5673/vh?namespace=ns&queue_type=quorum&heartbeat=5"
        "&prefetch=7&confirm_timeout=2&reconnect_timeout=3&exchange=bus&dlq_retention=60"
    )
    assert s.endpoints == (("h1", 5672), ("h2", 5673))
    assert (s.vhost, s.exchange, s.queue_type, s.heartbeat, s.prefetch) == (
        "vh",
        "ns.bus",
        "quorum",
        5,
        7,
    )
    assert (s.confirm_timeout, s.reconnect_timeout, s.dlq_retention) == (2.0, 3.0, 60)
    assert s.name("payroll.employee.created") == "ns.payroll.employee.created"
    assert s.herald_name("ns.audit.employee.+") == "audit.employee.*"
    assert s.driver_url("h1", 5672).query["heartbeat"] == "5"
    assert s.driver_url("h1", 5672).path == "/vh"
    assert "pw" not in str(s) and "pw" not in repr(s)

    plain = AMQPSettings.from_url("amqp://127.0.0.1")
    sub = Subscription("payroll", "employee.created")
    assert (plain.vhost, plain.exchange, plain.endpoints) == ("/", "events", (("127.0.0.1", 5672),))
    assert plain.dlq_retention == 14 * 24 * 3600 and plain.management is None
    assert plain.name(sub.queue) == "payroll.employee.created"
    assert plain.name(sub.dead_letter_queue) == "payroll.dlq"
    assert retry_queue_name(sub.queue, 500) == "payroll.employee.created.retry.500ms"
    assert Topology(plain).queue_arguments() == {}
    assert Topology(plain).dead_letter_arguments() == {"x-message-ttl": 1_209_600_000}
    quorum = Topology(AMQPSettings.from_url("amqp://h/?queue_type=quorum&dlq_retention=0"))
    assert quorum.queue_arguments() == {"x-queue-type": "quorum"}
    assert quorum.dead_letter_arguments() == {"x-queue-type": "quorum"}
    assert AMQPSettings.from_url("amqps://h").endpoints == (("h", 5671),)
    assert AMQPSettings.from_url("amqp://h/%2F").vhost == "/"
    assert AMQPBroker.schemes == ("amqp", "amqps")
    assert isinstance(broker_from_url("amqps://h"), AMQPBroker)


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("amqp://h/?exchnage=x", "query parameter 'exchnage'"),
        ("amqp://h/?queue_type=stream", "query parameter 'queue_type'"),
        ("amqp://h/?cafile=/ca.pem", "scheme"),
        ("amqp://h/?heartbeat=soon", "query parameter 'heartbeat'"),
        ("amqp:///vhost", "host"),
        ("amqp://h/?dlq_retention=-1", "query parameter 'dlq_retention'"),
        ("amqp://h/?dlq_retention=315360001", "query parameter 'dlq_retention'"),
        ("amqp://h/?management=ftp://h", "query parameter 'management'"),
        ("amqp://h/?management=http://h:99999", "query parameter 'management'"),
        ("amqp://h/?management=http%3A%2F%2Fh%3A1%2Fa%3Fb", "query parameter 'management'"),
    ],
)
def test_bad_urls_are_rejected(url: str, part: str) -> None:
    with pytest.raises(BrokerURLError) as info:
        broker_from_url(url)
    assert info.value.part == part


def test_management_url_and_its_credentials() -> None:
    inherited = AMQPSettings.from_url("amqp://app:s3cret@h/?management=http://h:15672/")
    assert inherited.management is not None
    assert inherited.management.base == "http://h:15672"
    assert (inherited.management.username, inherited.management.password) == ("app", "s3cret")
    own = AMQPSettings.from_url(
        "amqp://app:s3cret@h/vh?management=https%3A%2F%2Fadmin%3Aw%40tch%40mq%3A443%2Frabbit"
    )
    assert own.management is not None
    assert own.management.base == "https://mq:443/rabbit"
    assert (own.management.username, own.management.password) == ("admin", "w@tch")
    for shown in (str(inherited), repr(inherited), str(own), repr(own), repr(own.management)):
        assert "s3cret" not in shown and "w@tch" not in shown and "w%40tch" not in shown
    assert "management=https://admin:***@mq:443/rabbit" in str(own)
    assert own.scrub("login app:s3cret admin:w@tch") == "login app:*** admin:***"


def test_tls_context() -> None:
    context = AMQPSettings.from_url("amqps://h/?verify=false").ssl_context()
    assert context is not None and context.verify_mode == ssl.CERT_NONE
    verified = AMQPSettings.from_url("amqps://h").ssl_context()
    assert verified is not None and verified.verify_mode == ssl.CERT_REQUIRED
    assert AMQPSettings.from_url("amqp://h").ssl_context() is None


def test_retry_delays_round_up_never_down() -> None:
    assert delay_bucket(0) == 0 and delay_bucket(-1) == 0
    assert delay_bucket(0.6) == 600, "a retry asked for 0.6 s must not come back after 0.5 s"
    assert delay_bucket(0.601) == 800 and delay_bucket(0.0001) == 10
    assert [delay_bucket(0.5 * 2**n) for n in range(5)] == [500, 1000, 2000, 4000, 8000]
    day = 24 * 3600
    delays = [1.01**n / 1000 for n in range(1, 2300) if 1.01**n / 1000 <= day]
    assert len(delays) > 1000
    for delay in delays:
        bucket = delay_bucket(delay)
        assert delay * 1000 <= bucket <= max(10, 1.5 * delay * 1000), (delay, bucket)
    assert delay_bucket(2 * day) == DELAY_BUCKETS_MS[-1] == day * 1000, "the longest: a day"
    assert len(DELAY_BUCKETS_MS) <= 60


@pytest.mark.parametrize(
    ("headers", "attempt"),
    [
        ({}, 1),
        ({"herald-attempt": 3}, 3),
        ({"herald-attempt": "7"}, 7),
        ({"herald-attempt": b"4"}, 4),
        ({"herald-attempt": 1_000_000}, 1_000_000),
    ],
)
def test_attempt_header_is_read(headers: dict[str, Any], attempt: int) -> None:
    assert attempt_header(headers) == attempt


@pytest.mark.parametrize(
    "forged",
    [
        -1_000_000_000,
        -1,
        0,
        1_000_001,
        10**12,
        "abc",
        "1e3",
        " 3",
        "\uff13",
        3.0,
        True,
        [1],
        b"\xff",
    ],
)
def test_forged_attempt_header_is_a_header_error(forged: object) -> None:
    with pytest.raises(HeaderError, match="herald-attempt"):
        attempt_header({"herald-attempt": forged})


def test_delivery_count_and_attempts() -> None:
    assert delivery_count({}) == 0 and delivery_count({"x-delivery-count": 2}) == 2
    for forged in (-5, 10**9, "many", 2.5):
        with pytest.raises(HeaderError, match="x-delivery-count"):
            delivery_count({"x-delivery-count": forged})
    assert attempt_of(1, redelivered=False, count=None, released=0) == 1
    assert attempt_of(1, redelivered=True, count=None, released=0) == 2
    assert attempt_of(1, redelivered=True, count=None, released=1) == 1
    assert attempt_of(3, redelivered=True, count=2, released=0) == 5
    assert attempt_of(1, redelivered=True, count=2, released=1) == 2
    assert attempt_of(999_999, redelivered=True, count=1000, released=0) == 1_000_000


@pytest.mark.parametrize(
    ("address", "accepted"),
    [
        (
            "amq.rabbitmq.reply-to.g1h2AA1yZXBseUA5MjQ4ODg0AAAjdwAAAABrD2iV.HKfoRAajGEmaQ2L8pFTS+w==",
            True,
        ),
        ("amq.rabbitmq.reply-to.g1h2AA5yZXBseUA2ODc4MTMzNAAAcEoAAAAAaS8eQg==", True),
        ("amq.rabbitmq.reply-to", False),
        ("amq.rabbitmq.reply-to.", False),
        ("amq.rabbitmq.reply-tox", False),
        ("amq.rabbitmq.reply-to..abc", False),
        ("amq.rabbitmq.reply-to.abc def", False),
        ("amq.rabbitmq.reply-to.abc\n", False),
        ("amq.rabbitmq.reply-to.abc\x00", False),
        ("amq.rabbitmq.reply-to.ab\u00e9", False),
        ("amq.rabbitmq.reply-to." + "A" * 600, False),
        ("AMQ.RABBITMQ.REPLY-TO.abc", False),
        ("payroll.employee.created", False),
        ("herald.reply." + "0" * 32, False),
    ],
)
def test_reply_addresses_are_strict(address: str, accepted: bool) -> None:
    assert is_reply_address(address) is accepted
    assert AMQPBroker(AMQPSettings.from_url("amqp://h")).is_reply_address(address) is accepted


def test_error_table_converts_and_never_shows_secrets() -> None:
    settings = AMQPSettings.from_url(
        "amqp://guest:s3cret-pw@h/?management=http%3A%2F%2Fops%3Am4nage%40h%3A15672"
    )
    table = error_table(settings)
    cases: list[tuple[BaseException, type[Exception]]] = [
        (aiormq.AuthenticationError("ACCESS_REFUSED guest s3cret-pw"), BrokerError),
        (aiormq.ConnectionChannelError("gone"), ConnectionLostError),
        (aiormq.ChannelInvalidStateError("closed"), ConnectionLostError),
        (ConnectionResetError("reset"), ConnectionLostError),
        (aiormq.DeliveryError(None, None), PublishError),  # type: ignore[arg-type]
        (TimeoutError(), HeraldTimeoutError),
        (aiormq.ChannelNotFoundEntity("NOT_FOUND - no exchange m4nage@h"), BrokerError),
        (
            urllib.error.HTTPError("http://ops:m4nage@h", 401, "Unauthorized", MailHeaders(), None),
            BrokerError,
        ),
    ]
    for driver_error, herald_class in cases:
        converted = table.convert(driver_error, "doing it")
        assert type(converted) is herald_class, (driver_error, converted)
        assert "s3cret-pw" not in str(converted) and "m4nage" not in str(converted)
    assert "401" in str(table.convert(cases[-1][0], "reading stats"))
    assert "authentication failed" in str(table.convert(cases[0][0], "connecting"))


def test_server_refusals_are_recognised() -> None:
    big = aiormq.ChannelPreconditionFailed(
        "PRECONDITION_FAILED - message size 2097152 is larger than configured max size 1048576"
    )
    assert too_large(big) == (2097152, 1048576)
    assert too_large(aiormq.ChannelPreconditionFailed("PRECONDITION_FAILED - other")) is None
    assert too_large(None) is None
    late = aiormq.ChannelPreconditionFailed(
        "PRECONDITION_FAILED - delivery acknowledgement on channel 2 timed out. Timeout value "
        "used: 1800000 ms. This timeout value can be configured, see consumers doc guide"
    )
    assert consumer_timed_out(late) and not consumer_timed_out(big)


def test_credit_follows_the_sizes_of_recent_bodies() -> None:
    flow = Flow(Prefetch(messages=64, bytes=64 * MiB), largest=16 * MiB)
    assert flow.credit() == 4, "before any body is seen, assume the largest"
    flow.observe(1024)
    assert flow.credit() == 64, "small bodies: the message count"
    flow.observe(8 * MiB)
    assert flow.credit() == 8, "a large body lowers it at once"
    for _ in range(32):
        flow.observe(1024)
    assert flow.credit() == 64, "the large one is forgotten after 32 more"
    huge = Flow(Prefetch(messages=10, bytes=MiB), largest=16 * MiB)
    assert huge.credit() == 1, "a body larger than the byte bound still flows, one at a time"


def test_the_kept_largest_body_is_the_largest_of_the_last_ones() -> None:
    """The largest is kept as bodies come, not recomputed: it must stay the maximum
    of the last SIZES_SEEN, through rises, ties and the largest dropping out."""
    rng = random.Random(7)
    flow = Flow(Prefetch(messages=64, bytes=64 * MiB), largest=16 * MiB)
    seen: list[int] = []
    for _ in range(2000):
        size = rng.choice([0, 1, 10, 1024, 1024, 5000, rng.randrange(0, 2 * MiB)])
        flow.observe(size)
        seen.append(size)
        largest = max(*seen[-SIZES_SEEN:], 1)
        assert flow.largest == largest
        assert flow.credit() == max(1, min(64, 64 * MiB // largest))


def test_a_channel_adds_a_consumer_for_the_room_left() -> None:
    """The finding of round 2: with four held the consumer waited for room for its
    full new credit; now it subscribes for what fits next to them."""
    flow = Flow(Prefetch(messages=8, bytes=64 * MiB), largest=16 * MiB)
    ledger = Ledger(flow)
    assert ledger.room() == 4 and ledger.wants_more()
    ledger.promise("a", 4)
    for _ in range(4):
        ledger.received("a", 100)
    flow.observe(100)
    assert ledger.exhausted() and ledger.room() == 4 and ledger.wants_more()
    ledger.promise("b", 4)
    assert ledger.room() == 0 and not ledger.wants_more(), "eight promised: the bound"
    ledger.settled("a", 100)
    assert not ledger.wants_more(), "a promised consumer has room: no new one"


def test_larger_bodies_make_the_promises_too_large() -> None:
    flow = Flow(Prefetch(messages=64, bytes=4 * MiB), largest=16 * MiB)
    ledger = Ledger(flow)
    flow.observe(1024)
    ledger.promise("a", 64)
    ledger.received("a", 1024)
    assert not ledger.over_promised()
    flow.observe(2 * MiB)
    ledger.received("a", 2 * MiB)
    assert ledger.over_promised(), "64 promised bodies of 2 MiB exceed 4 MiB"
    ledger.forget("a")
    assert ledger.room() == 0 and not ledger.wants_more(), "2 MiB held: one more does not fit"
    ledger.settled("a", 1024)
    ledger.settled("a", 2 * MiB)
    assert ledger.room() == 2 and ledger.wants_more()


def test_an_exclusive_channel_switches_when_it_doubles_or_must() -> None:
    flow = Flow(Prefetch(messages=8, bytes=64 * MiB), largest=16 * MiB)
    ledger = Ledger(flow)
    ledger.promise("a", 1)
    ledger.received("a", 100)
    flow.observe(100)
    assert ledger.replacing() == 7 and ledger.wants_switch()
    ledger.forget("a")
    ledger.promise("b", 7)
    assert not ledger.wants_switch()
    for _ in range(7):
        ledger.received("b", 100)
    ledger.settled("a", 100)
    assert not ledger.wants_switch(), "8 - 7 held: the new one would get less"
    flow.observe(16 * MiB)
    assert ledger.wants_switch(), "larger bodies: it must"
