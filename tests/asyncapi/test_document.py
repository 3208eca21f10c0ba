"""AsyncAPI documents: what they say about the HR platform and edge cases, and the
official parser's verdict on them (zero errors)."""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from google.protobuf.struct_pb2 import Value
from pydantic import BaseModel

import herald
from herald.asyncapi import asyncapi_document
from hr_platform.catalog import services as hr_services
from hr_platform.events import EmployeeCreated, EmployeeRecord
from hr_platform.process import platform_codecs

from .parser import Diagnostics, errors, validate
from .parser import warnings as parser_warnings

HR_AMQP = "amqp://hr:s3cret-pw@rabbit.internal:5672/hr?namespace=blue&exchange=hr-events"


class Scored(herald.Event, type="game.scored", content_type="application/protobuf"):
    """A protobuf-only event (a recursive message: Value holds Structs of Values)."""

    __protobuf__: ClassVar[type] = Value
    number_value: float = 0.0


class Ping(herald.Event, type="health.ping"):
    n: int


def edge_services() -> list[herald.Service]:
    """Corners: a pattern no documented service publishes, an RPC without a declared
    reply, one with ``reply=``, a protobuf-only event, an exclusive service."""
    games = herald.Service("games", publishes=[Scored], exclusive=True)
    watcher = herald.Service("watcher")

    @watcher.on("audit.#", name="audit")
    async def audit(message: herald.Message) -> None:
        pass

    @watcher.on("billing.*")
    async def billing(message: herald.Message) -> None:
        pass

    @watcher.on(Scored)
    async def scored(event: Scored) -> None:
        pass

    @watcher.rpc(Ping)
    async def ping(request: Ping):  # type: ignore[no-untyped-def]
        return None

    @games.rpc(EmployeeCreated, reply=EmployeeRecord)
    async def echo(request: EmployeeCreated) -> BaseModel:
        raise NotImplementedError

    return [games, watcher]


def hr_document(url: str = HR_AMQP) -> dict[str, Any]:
    return asyncapi_document(hr_services(), broker_url=url, codecs=platform_codecs())


@pytest.fixture(scope="module")
def verdicts() -> Iterator[dict[str, Diagnostics]]:
    broken = hr_document()
    queue_binding = broken["channels"]["queue.payroll.employee"]["bindings"]["amqp"]
    queue_binding["exchange"] = {"name": "hr-events", "type": "topic"}  # 0.3.0 forbids both
    documents = {
        "hr-amqp": hr_document(),
        "hr-sqlite": hr_document("sqlite:///./var/herald.db"),
        "hr-nats": hr_document("nats://nats.internal:4222"),
        "edge": asyncapi_document(edge_services(), broker_url="amqp://localhost/"),
        "broken": broken,
    }
    with tempfile.TemporaryDirectory(prefix="herald-asyncapi-") as workdir:
        yield validate(documents, Path(workdir))


@pytest.mark.parametrize("name", ["hr-amqp", "hr-sqlite", "hr-nats", "edge"])
def test_the_official_parser_finds_no_errors(verdicts: dict[str, Diagnostics], name: str) -> None:
    diagnostics = verdicts[name]
    for warning in parser_warnings(diagnostics):
        warnings.warn(f"AsyncAPI parser, {name}: {warning}", stacklevel=1)
    assert errors(diagnostics) == []


def test_the_parser_rejects_a_channel_that_is_both_exchange_and_queue(
    verdicts: dict[str, Diagnostics],
) -> None:
    found = errors(verdicts["broken"])
    assert found, "the parser accepted an AMQP binding with both an exchange and a queue"
    assert all(d["path"].startswith("channels/queue.payroll.employee/bindings/amqp") for d in found)


def test_the_server_comes_from_the_broker_url_without_credentials() -> None:
    doc = hr_document()
    assert doc["servers"] == {
        "broker": {
            "host": "rabbit.internal:5672",
            "protocol": "amqp",
            "pathname": "/hr",
            "description": "RabbitMQ (AMQP 0-9-1), virtual host hr",
        }
    }
    text = json.dumps(doc)
    assert "s3cret-pw" not in text
    assert "rabbit.internal:5672/" not in text  # no URL with its userinfo or query


def test_hr_channels_are_event_types_and_queues() -> None:
    doc = hr_document()
    channels = doc["channels"]
    for event_type in ("employee.created", "employee.updated", "employee.deleted"):
        channel = channels[f"event.{event_type}"]
        assert channel["address"] == event_type
        assert channel["bindings"]["amqp"]["is"] == "routingKey"
        assert channel["bindings"]["amqp"]["exchange"]["name"] == "blue.hr-events"
    payroll = channels["queue.payroll.employee"]
    assert payroll["address"] == "blue.payroll.employee"
    assert payroll["bindings"]["amqp"]["queue"]["name"] == "blue.payroll.employee"
    assert "exchange" not in payroll["bindings"]["amqp"]
    assert payroll["x-herald-bindings"] == [
        {"exchange": "blue.hr-events", "routingKey": "employee.*"}
    ]
    assert payroll["x-herald-dead-letter-queue"] == "blue.payroll.dlq"
    # JSON from Herald's employees service, protobuf from the Ruby platform:
    assert sorted(payroll["messages"]) == [
        "EmployeeCreated",
        "EmployeeCreated.protobuf",
        "EmployeeDeleted",
        "EmployeeDeleted.protobuf",
        "EmployeeUpdated",
        "EmployeeUpdated.protobuf",
    ]
    assert sorted(channels["queue.giftcards.employee.created"]["messages"]) == [
        "NewEmployee",
        "NewEmployee.protobuf",
    ]


def test_hr_operations_send_receive_and_answer() -> None:
    ops = hr_document()["operations"]
    sends = sorted(k for k, op in ops.items() if op["action"] == "send")
    assert sends == [
        "employees.publish.employee.created",
        "employees.publish.employee.deleted",
        "employees.publish.employee.updated",
    ]
    answers = sorted(k for k, op in ops.items() if "reply" in op)
    assert answers == [
        f"employees.rpc.employees.{verb}"
        for verb in ("create", "delete", "get", "search", "update")
    ]
    assert ops["payroll.employee"]["action"] == "receive"
    assert (
        ops["payroll.employee"]["summary"] == "Open, update or close the employee's payroll record."
    )
    assert ops["giftcards.employee.created"]["channel"] == {
        "$ref": "#/channels/queue.giftcards.employee.created"
    }
    search = ops["employees.rpc.employees.search"]
    assert search["action"] == "receive"
    assert search["reply"]["address"]["location"] == "$message.header#/herald-reply-to"
    assert search["reply"]["channel"] == {"$ref": "#/channels/rpc.replies"}
    assert search["reply"]["messages"] == [
        {"$ref": "#/channels/rpc.replies/messages/EmployeeList.reply"},
        {"$ref": "#/channels/rpc.replies/messages/herald.error-reply"},
    ]


def test_payloads_are_the_models_schemas() -> None:
    doc = hr_document()
    messages, schemas = doc["components"]["messages"], doc["components"]["schemas"]
    search = messages["SearchEmployees"]
    assert search["name"] == "rpc.employees.search"
    assert search["correlationId"] == {"location": "$message.header#/herald-correlation-id"}
    assert search["headers"]["required"] == ["herald-reply-to"]
    assert search["payload"] == {"$ref": "#/components/schemas/SearchEmployees"}
    assert set(schemas["SearchEmployees"]["properties"]) == {
        "first_name",
        "last_name",
        "email",
        "limit",
        "offset",
    }
    reply = messages["EmployeeList.reply"]
    assert reply["payload"] == {"$ref": "#/components/schemas/EmployeeList"}
    records = schemas["EmployeeList"]["properties"]["records"]
    assert records["items"] == {"$ref": "#/components/schemas/EmployeeRecord"}
    created = messages["EmployeeCreated"]
    assert created["name"] == "employee.created"
    assert created["contentType"] == "application/json"
    assert created["bindings"]["amqp"]["messageType"] == "employee.created"
    assert schemas["EmployeeCreated"]["properties"]["salary"]["type"] == "string"


def test_protobuf_payloads_come_from_the_descriptor() -> None:
    doc = hr_document()
    message = doc["components"]["messages"]["NewEmployee.protobuf"]
    assert message["contentType"] == "application/protobuf"
    assert message["x-protobuf-message"] == "hr_platform.EmployeeMessage"
    schema = doc["components"]["schemas"]["hr_platform.EmployeeMessage"]
    assert schema["properties"] == {
        "guid": {"type": "string"},
        "first_name": {"type": "string"},
        "last_name": {"type": "string"},
    }


def test_edge_cases() -> None:
    doc = asyncapi_document(edge_services(), broker_url="redis://cache:6379")
    channels, messages = doc["channels"], doc["components"]["messages"]
    assert "bindings" not in channels["queue.watcher.audit"]
    assert channels["queue.watcher.audit"]["x-herald-bindings"] == [{"pattern": "audit.#"}]
    assert list(channels["queue.watcher.audit"]["messages"]) == ["AnyEvent"]
    billing = channels["queue.watcher.billing._star_"]  # keys allow letters, digits, _ . -
    assert billing["address"] == "watcher.billing.*"
    assert list(billing["messages"]) == ["AnyEvent-2"]
    assert "watcher.billing._star_" in doc["operations"]
    assert channels["queue.games.rpc.employee.created"]["x-herald-single-active-consumer"]
    # A protobuf-only event is sent as protobuf and received as either.
    sent = doc["operations"]["games.publish.game.scored"]["messages"]
    assert sent == [{"$ref": "#/channels/event.game.scored/messages/Scored.protobuf"}]
    assert sorted(channels["queue.watcher.game.scored"]["messages"]) == [
        "Scored",
        "Scored.protobuf",
    ]
    assert "google.protobuf.Struct" in doc["components"]["schemas"]
    # Replies: undeclared, declared with reply=.
    assert messages["AnyReply"]["payload"]["description"] == "The handler declares no reply model."
    assert "EmployeeRecord.reply" in messages


def test_declarations_are_checked() -> None:
    with pytest.raises(herald.ConfigurationError, match="publishes= takes Event subclasses"):
        herald.Service("x", publishes=[EmployeeRecord])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="has no event type"):
        herald.Service("x", publishes=[herald.Event])
    svc = herald.Service("x")
    with pytest.raises(herald.ConfigurationError, match="reply= takes a pydantic model"):
        svc.rpc(Ping, reply=int)  # type: ignore[arg-type]
    with pytest.raises(herald.ConfigurationError, match="needs at least one service"):
        asyncapi_document([])
    with pytest.raises(herald.ConfigurationError, match="named twice"):
        asyncapi_document([herald.Service("x"), herald.Service("x")])
