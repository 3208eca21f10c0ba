from __future__ import annotations

import base64
import json
import re

import pytest

import herald
from herald.wire import decode_message, encode_headers


def test_round_trip_keeps_every_attribute_and_header() -> None:
    original = herald.Message(
        type="employee.created", body=b"{}", subject="g1", source="hr", headers={"x-a": "1"}
    )
    assert decode_message(encode_headers(original), b"{}") == original


@pytest.mark.parametrize("prefix", ["cloudEvents_", "cloudEvents:", "ce-", "ce_"])
def test_accepts_every_known_prefix(prefix: str) -> None:
    message = decode_message({f"{prefix}type": "a.b", f"{prefix}id": "42"}, b"")
    assert (message.type, message.id) == ("a.b", "42")


def test_plain_message_takes_type_from_routing_key_and_transport_fields() -> None:
    message = decode_message(
        {b"x-app": b"ruby"},
        b"\x08\x01",
        default_type="employee.created",
        content_type="application/protobuf",
        message_id="m-1",
    )
    assert message.type == "employee.created"
    assert message.datacontenttype == "application/protobuf"
    assert message.id == "m-1" and message.headers == {"x-app": "ruby"}


def test_no_type_at_all_is_a_decode_error() -> None:
    with pytest.raises(herald.DecodeError, match="no CloudEvents type"):
        decode_message({}, b"")


def test_header_names_are_read_in_any_case() -> None:
    message = decode_message({"CE-Type": "a.b", "Ce-Id": "7", "CLOUDEVENTS_SUBJECT": "k"}, b"")
    assert (message.type, message.id, message.subject, message.headers) == ("a.b", "7", "k", {})


def test_encode_headers_takes_the_binding_prefix_and_may_leave_the_content_type_out() -> None:
    message = herald.Message(type="a.b", body=b"", headers={"x": "1"})
    headers = encode_headers(message, prefix="ce-", content_type=False)
    assert headers["ce-type"] == "a.b" and headers["x"] == "1"
    assert "ce-datacontenttype" not in headers and not any(
        h.startswith("cloudEvents") for h in headers
    )
    assert encode_headers(message)["cloudEvents_datacontenttype"] == "application/json"


ENVELOPE = {
    "specversion": "1.0",
    "id": "e-1",
    "source": "/hr/employees",
    "type": "employee.created",
    "subject": "g1",
    "time": "2026-01-02T03:04:05Z",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "level": 3,
    "data": {"guid": "g1", "name": "Ada"},
}


def structured(envelope: object, **headers: str) -> herald.Message:
    body = json.dumps(envelope).encode() if not isinstance(envelope, bytes) else envelope
    return decode_message(headers, body, content_type="application/cloudevents+json")


def test_a_structured_event_becomes_the_message_it_describes() -> None:
    message = structured(ENVELOPE)
    assert (message.type, message.id, message.source, message.subject) == (
        "employee.created", "e-1", "/hr/employees", "g1"
    )  # fmt: skip
    assert json.loads(message.body) == {"guid": "g1", "name": "Ada"}
    assert message.datacontenttype == "application/json"
    assert message.time.isoformat() == "2026-01-02T03:04:05+00:00"
    assert message.headers == {"traceparent": ENVELOPE["traceparent"], "level": "3"}


def test_structured_data_base64_text_and_no_data() -> None:
    raw = {**ENVELOPE, "datacontenttype": "image/png"}
    del raw["data"]
    raw["data_base64"] = base64.b64encode(b"\x89PNG\x00").decode()
    assert structured(raw).body == b"\x89PNG\x00"
    assert structured(raw).datacontenttype == "image/png"
    text = {**ENVELOPE, "datacontenttype": "text/plain", "data": "héllo"}
    assert structured(text).body == "héllo".encode()
    empty = {k: v for k, v in ENVELOPE.items() if k != "data"}
    assert structured(empty).body == b""


def test_structured_mode_is_recognised_by_header_or_attribute_and_the_transport_wins() -> None:
    body = json.dumps(ENVELOPE).encode()
    by_header = decode_message({"Content-Type": "application/cloudevents+json", "x": "1"}, body)
    by_attribute = decode_message(
        {"cloudEvents_datacontenttype": "application/cloudevents+json"}, body
    )
    for message in (by_header, by_attribute):
        assert (message.id, message.type) == ("e-1", "employee.created")
    assert by_header.headers["x"] == "1" and "Content-Type" not in by_header.headers
    ignored = decode_message(
        {"ce-type": "other.type", "ce-id": "x"},
        body,
        content_type="application/cloudevents+json; charset=utf-8",
    )
    assert (ignored.type, ignored.id) == ("employee.created", "e-1"), "binary attributes ignored"
    plain = decode_message({"ce-type": "a.b"}, body, content_type="application/json")
    assert plain.type == "a.b" and plain.body == body


BAD_ENVELOPES: dict[str, tuple[bytes, str]] = {
    "not JSON": (b'{"specversion": "1.0", ', "not JSON"),
    "not UTF-8": (b"\xff\xfe\xfd", "not JSON"),
    "an array": (b"[1, 2]", "not an object"),
    "no specversion": (
        json.dumps({k: v for k, v in ENVELOPE.items() if k != "specversion"}).encode(),
        "'specversion' is missing",
    ),
    "wrong specversion": (
        json.dumps({**ENVELOPE, "specversion": "0.3"}).encode(),
        "specversion '0.3' is not 1.0",
    ),
    "no id": (
        json.dumps({k: v for k, v in ENVELOPE.items() if k != "id"}).encode(),
        "'id' is missing",
    ),
    "empty source": (json.dumps({**ENVELOPE, "source": ""}).encode(), "'source' is missing"),
    "no type": (
        json.dumps({k: v for k, v in ENVELOPE.items() if k != "type"}).encode(),
        "'type' is missing",
    ),
    "bad type": (json.dumps({**ENVELOPE, "type": "a.*"}).encode(), "not an event type"),
    "type an object": (
        json.dumps({**ENVELOPE, "type": {"a": 1}}).encode(),
        "'type' is a JSON object",
    ),
    "bad time": (
        json.dumps({**ENVELOPE, "time": "yesterday"}).encode(),
        "invalid CloudEvents attributes",
    ),
    "data_base64 not base64": (
        json.dumps({**ENVELOPE, "data": None, "data_base64": "!!"}).encode(),
        "data_base64 is not base64",
    ),
    "data and data_base64": (
        json.dumps({**ENVELOPE, "data_base64": "AA=="}).encode(),
        "both data and data_base64",
    ),
    "too deep": (
        json.dumps({**ENVELOPE, "data": json.loads("[" * 80 + "]" * 80)}).encode(),
        "nested deeper than 64",
    ),
    "far too deep": (b'{"data": ' + b"[" * 100_000 + b"}", "nested deeper than 64"),
    "bad attribute name": (
        json.dumps({**ENVELOPE, "Bad-Name": "x"}).encode(),
        "'Bad-Name' is not a CloudEvents attribute",
    ),
    "id too long": (
        json.dumps({**ENVELOPE, "id": "i" * 5000}).encode(),
        "'id' is 5000 characters long",
    ),
}


@pytest.mark.parametrize("case", BAD_ENVELOPES)
def test_a_malformed_structured_event_is_a_decode_error_naming_the_problem(case: str) -> None:
    body, problem = BAD_ENVELOPES[case]
    with pytest.raises(herald.DecodeError, match=re.escape(problem)):
        structured(body)


def test_other_event_formats_and_batches_are_refused_by_name() -> None:
    for media in ("application/cloudevents+avro", "application/cloudevents-batch+json"):
        with pytest.raises(herald.DecodeError, match=re.escape(media)):
            decode_message({}, b"[]", content_type=media)
