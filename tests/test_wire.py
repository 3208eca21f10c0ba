from __future__ import annotations

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
