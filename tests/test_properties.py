"""Property-based tests at the trust boundary: whatever arrives, wire decoding,
envelope parsing, runtime headers, topic patterns and URL parsing raise nothing but
Herald's own errors, and what they accept round-trips."""

from __future__ import annotations

import base64
import json
from datetime import UTC

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import herald
from herald.brokers import broker_from_url
from herald.codec import default_codecs
from herald.deadletter import DeadLetter, DeadLetterReason
from herald.headers import attempt_from, deadline_from, time_from
from herald.message import Message
from herald.rpc import STATUS, decode_reply
from herald.topic import matches, validate_pattern
from herald.url import BrokerURL, redact_url
from herald.wire import decode_message, encode_headers

WORD = st.from_regex(r"[A-Za-z0-9_\-]{1,8}", fullmatch=True)
EVENT_TYPE = st.lists(WORD, min_size=1, max_size=5).map(".".join)
PATTERN = st.lists(st.one_of(WORD, st.sampled_from(["*", "#"])), min_size=1, max_size=6).map(
    ".".join
)
HEADER_VALUE = st.one_of(
    st.text(max_size=50), st.binary(max_size=50), st.integers(), st.floats(), st.none()
)
RAW_HEADERS = st.dictionaries(
    st.one_of(st.text(max_size=30), st.binary(max_size=30), st.sampled_from(
        ["cloudEvents_type", "ce-id", "ce_time", "cloudEvents:subject", "ce-specversion",
         "cloudEvents_datacontenttype", "ce_source", "herald-attempt"]
    )),
    HEADER_VALUE,
    max_size=8,
)  # fmt: skip


class Thing(herald.Event, type="props.thing"):
    n: int
    tags: list[str] = []


@given(headers=RAW_HEADERS, body=st.binary(max_size=200), default=st.none() | st.text(max_size=30))
@example(headers={"ce_time": "not a time", "ce_type": "a.b"}, body=b"", default=None)
@example(headers={b"\xff": b"\xfe"}, body=b"", default="a.b")
@example(headers={"cloudEvents_type": "a" * 10_000}, body=b"", default=None)
def test_wire_decoding_raises_only_decode_errors(
    headers: dict[object, object], body: bytes, default: str | None
) -> None:
    try:
        message = decode_message(headers, body, default_type=default)
    except herald.DecodeError as exc:
        assert str(exc)
    else:
        assert message.body == body
        assert decode_message(encode_headers(message), body) == message


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
ENVELOPE = st.fixed_dictionaries(
    {},
    optional={
        "specversion": st.sampled_from(["1.0", "0.3"]) | JSON,
        "id": st.text(max_size=8) | JSON,
        "source": st.text(max_size=8) | JSON,
        "type": EVENT_TYPE | JSON,
        "subject": st.text(max_size=8) | JSON,
        "time": st.sampled_from(["2026-01-02T03:04:05Z", "yesterday"]) | JSON,
        "datacontenttype": st.sampled_from(["application/json", "text/plain", "image/png"]),
        "data": JSON,
        "data_base64": st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode()) | JSON,
        "traceparent": JSON,
        "Bad-Name": JSON,
    },
)


@given(envelope=ENVELOPE, raw=st.none() | st.binary(max_size=60))
@example(envelope={}, raw=b'{"data": ' + b"[" * 100_000 + b"}")
@example(envelope={"specversion": "1.0", "id": "1", "source": "s", "type": "a.b"}, raw=None)
def test_structured_events_decode_or_raise_decode_errors(
    envelope: dict[str, object], raw: bytes | None
) -> None:
    body = raw if raw is not None else json.dumps(envelope).encode()
    try:
        message = decode_message({}, body, content_type="application/cloudevents+json")
    except herald.DecodeError as exc:
        assert str(exc)
    else:
        assert message.type == envelope["type"] and message.id == envelope["id"]
        assert decode_message(encode_headers(message), message.body) == message


@given(
    event_type=EVENT_TYPE,
    body=st.binary(max_size=100),
    subject=st.none() | st.text(max_size=30),
    headers=st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=40), max_size=4),
)
def test_messages_round_trip_through_the_wire_headers(
    event_type: str, body: bytes, subject: str | None, headers: dict[str, str]
) -> None:
    headers = {
        k: v for k, v in headers.items() if not k.lower().startswith(("cloudevents", "ce-", "ce_"))
    }
    message = Message(type=event_type, body=body, subject=subject, headers=headers)
    assert decode_message(encode_headers(message), body) == message


@given(body=st.binary(max_size=300), content_type=st.text(max_size=40))
@example(body=b"[" * 100_000, content_type="application/json")
@example(body=b'{"n": 1e400}', content_type="application/json")
def test_envelope_decoding_raises_only_message_errors(body: bytes, content_type: str) -> None:
    try:
        thing = default_codecs.decode(body, content_type, Thing)
    except herald.MessageError as exc:
        assert str(exc)
    else:
        assert isinstance(thing.n, int)


@given(headers=st.dictionaries(st.text(max_size=40), st.text(max_size=60), max_size=10))
@example(headers={"herald-dl-attempts": "9" * 5000, "herald-dl-first-failure": "x"})
def test_dead_letter_reasons_parse_from_any_headers(headers: dict[str, str]) -> None:
    stored = Message(type="a.b", body=b"", headers=headers)
    letter = DeadLetter.from_stored(stored)
    assert letter.reason.attempts >= 0
    assert not any(name.startswith("herald-dl-") for name in letter.message.headers)


@given(
    reason=st.builds(
        DeadLetterReason,
        queue=st.text(max_size=30),
        error_type=st.text(max_size=30),
        error_message=st.text(max_size=100),
        attempts=st.integers(0, 10**6),
        first_failure=st.none() | st.datetimes(timezones=st.just(UTC)),
        last_failure=st.datetimes(timezones=st.just(UTC)),
    )
)
def test_dead_letter_reasons_round_trip(reason: DeadLetterReason) -> None:
    restored = DeadLetterReason.from_headers(reason.to_headers())
    assert restored.attempts == reason.attempts and restored.queue == reason.queue
    assert restored.last_failure == reason.last_failure


@given(text=st.text(max_size=80))
@example(text="٣")
@example(text="1" * 5000)
def test_runtime_headers_raise_only_header_errors(text: str) -> None:
    for parse in (attempt_from, deadline_from, lambda t: time_from("herald-x", t)):
        try:
            value = parse(text)
        except herald.HeaderError as exc:
            assert str(exc)
        else:
            if parse is attempt_from:
                assert isinstance(value, int) and 1 <= value <= 1_000_000


@given(body=st.binary(max_size=200), status=st.sampled_from(["ok", "error", "other"]))
@example(body=b'{"type": "NotFound", "expected": true, "data": {"message": 1}}', status="error")
@example(body=b'{"type": "Invalid", "expected": true, "data": []}', status="error")
@example(body=b"[" * 50_000, status="error")
def test_replies_decode_to_a_result_or_a_herald_error(body: bytes, status: str) -> None:
    class Reply(herald.Event, type="props.reply"):
        n: int

    reply = Message(type="herald.reply", body=body, headers={STATUS: status})
    try:
        decode_reply(reply, Reply)
    except herald.HeraldError as exc:
        assert str(exc) or isinstance(exc, herald.ExpectedError)


@given(text=st.text(max_size=300))
@example(text="a." * 200)
def test_patterns_validate_or_raise_pattern_errors(text: str) -> None:
    try:
        validate_pattern(text)
    except herald.PatternError as exc:
        assert str(exc)


def _reference_match(pattern: list[str], words: list[str]) -> bool:
    """AMQP topic matching by its definition, recursively (slow, obviously right)."""
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_reference_match(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _reference_match(rest, words[1:])


@given(pattern=PATTERN, event_type=EVENT_TYPE)
@example(pattern="#.#.x", event_type="x")
@example(pattern="a.#", event_type="a")
def test_matching_agrees_with_the_definition(pattern: str, event_type: str) -> None:
    expected = _reference_match(pattern.split("."), event_type.split("."))
    assert matches(pattern, event_type) == expected


@settings(deadline=None)
@given(pattern=st.just(".".join(["#"] * 60 + ["x"])), words=st.integers(50, 200))
def test_matching_many_wildcards_stays_fast(pattern: str, words: int) -> None:
    assert matches(pattern, ".".join(["a"] * words)) is False


URLS = st.one_of(
    st.text(max_size=120),
    st.builds(
        lambda scheme, rest: f"{scheme}://{rest}",
        st.sampled_from(["amqp", "amqps", "nats", "redis", "sqlite", "memory", "kafka", "x"]),
        st.text(max_size=100),
    ),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(url=URLS)
@example(url="amqp://guest:pa/ss@word@host/vhost")
@example(url="redis://h:99999999999999999999999/0")
@example(url="amqp://[::1")
def test_urls_parse_or_name_the_wrong_part(url: str) -> None:
    try:
        BrokerURL.parse(url)
    except herald.BrokerURLError as exc:
        assert exc.part
    try:
        broker_from_url(url)
    except herald.ConfigurationError as exc:
        assert str(exc)


SECRET = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    min_size=6,
    max_size=20,
).filter(lambda s: s.strip() == s and ":" not in s)


@given(
    scheme=st.sampled_from(["amqp", "nats", "redis"]),
    user=st.from_regex(r"[a-z]{1,8}", fullmatch=True),
    password=SECRET,
    host=st.from_regex(r"[a-z]{1,10}", fullmatch=True),
)
@example(scheme="amqp", user="guest", password="p/ss@w#rd?x", host="host")
@example(scheme="amqp", user="a", password="00000#", host="a")
@example(scheme="nats", user="a", password="NATSBr", host="a")
def test_a_password_never_shows_whatever_it_contains(
    scheme: str, user: str, password: str, host: str
) -> None:
    url = f"{scheme}://{user}:{password}@{host}/vhost"
    shown = redact_url(url)
    assert password not in shown and f"{user}:***@" in shown
    # The password may also be a word of the text around it ("NATSBr" in NATSBroker):
    # it leaks if it shows more often than in the same text made with its letters and digits
    # masked (the other characters kept, so that the URL parses alike).
    masked = "".join(("y" if c == "x" else "x") if c.isalnum() else c for c in password)
    other = f"{scheme}://{user}:{masked}@{host}/vhost"
    for text, control in zip(_shown(url), _shown(other), strict=True):
        expected = control.count(password) if masked != password else 0
        assert text.count(password) == expected, text


def _shown(url: str) -> list[str]:
    """What a user may see of a broker made from ``url``: its error, or its reprs."""
    try:
        broker = broker_from_url(url)
    except herald.HeraldError as exc:
        return [str(exc)]
    return [repr(broker), repr(herald.Bus(broker, url=url))]
