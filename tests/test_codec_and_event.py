from __future__ import annotations

import os

import pytest

import herald
import herald.message
from herald.codec import default_codecs


class EmployeeCreated(herald.Event, type="employee.created"):
    guid: str
    first_name: str


def test_event_type_and_json_round_trip() -> None:
    event = EmployeeCreated(guid="g1", first_name="Ada")
    content_type, body = default_codecs.encode(event)
    assert content_type == "application/json"
    assert default_codecs.decode(body, content_type, EmployeeCreated) == event
    assert EmployeeCreated.event_type() == "employee.created"


def test_events_are_immutable_and_tolerate_new_fields() -> None:
    event = default_codecs.decode(
        b'{"guid": "g", "first_name": "A", "added_later": 1}', "application/json", EmployeeCreated
    )
    assert event.guid == "g"
    with pytest.raises(Exception, match="frozen"):
        event.guid = "other"  # type: ignore[misc]


def test_decode_errors_are_classified_and_named() -> None:
    with pytest.raises(herald.DecodeError, match="not valid JSON"):
        default_codecs.decode(b"{oops", "application/json", EmployeeCreated)
    with pytest.raises(herald.ValidationError, match="first_name"):
        default_codecs.decode(b'{"guid": "g"}', "application/json", EmployeeCreated)
    with pytest.raises(herald.DecodeError, match="no codec for content type 'text/csv'"):
        default_codecs.decode(b"a,b", "text/csv", EmployeeCreated)


def test_event_without_type_explains_how_to_declare_one() -> None:
    class Untyped(herald.Event):
        x: int

    with pytest.raises(TypeError, match=r"type='domain\.verb'"):
        Untyped.event_type()
    with pytest.raises(ValueError, match="cannot be a pattern"):

        class Bad(herald.Event, type="employee.*"):
            pass


def test_message_is_frozen_with_cloudevents_attributes() -> None:
    message = herald.Message(type="employee.created", body=b"{}", subject="g1")
    attrs = message.attributes()
    assert attrs["specversion"] == "1.0" and attrs["subject"] == "g1"
    assert herald.Message.from_attributes(attrs, b"{}") == message
    with pytest.raises(AttributeError):
        message.type = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        message.headers["x"] = "y"  # type: ignore[index]
    with pytest.raises(TypeError, match="body must be bytes"):
        herald.Message(type="t", body="text")  # type: ignore[arg-type]


def test_message_ids_are_unique_and_differ_after_fork() -> None:
    ids = {herald.message.new_message_id() for _ in range(50_000)}
    assert len(ids) == 50_000
    herald.message.new_message_id()  # the parent now holds buffered random bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.write(write, herald.message.new_message_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    parent = herald.message.new_message_id()
    assert child[12:] != parent[12:], "a forked child must not repeat the parent's ids"
