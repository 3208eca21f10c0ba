"""Protobuf on the bus: the Ruby platform's EmployeeMessage, both ways."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import select

import herald
from herald.protobuf import CONTENT_TYPE, ProtobufCodec, with_protobuf
from hr_platform.database import Database
from hr_platform.giftcards import GiftCard, build_service, metadata
from hr_platform.process import platform_codecs
from hr_platform.proto import EmployeeMessage

from .platform import eventually


class EmployeeCreatedProto(herald.Event, type="employee.created", content_type=CONTENT_TYPE):
    """How a service that speaks protobuf declares its event."""

    __protobuf__: ClassVar[type] = EmployeeMessage
    guid: str
    first_name: str
    last_name: str


class EmployeeCreatedJSON(herald.Event, type="employee.created"):
    guid: str
    first_name: str
    last_name: str
    email: str = ""


class Promoted(herald.Event, type="employee.promoted"):
    guid: str


async def wait_for(items: list[Any], n: int) -> None:
    async def enough() -> bool:
        return len(items) >= n

    await eventually(enough, timeout=10, what=f"{n} deliveries", interval=0.01)


def test_encodes_to_bytes_the_ruby_side_can_parse() -> None:
    codecs = with_protobuf()
    content_type, body = codecs.encode(
        EmployeeCreatedProto(guid="g1", first_name="Ada", last_name="Lovelace")
    )
    assert content_type == "application/protobuf"
    parsed = EmployeeMessage.FromString(body)
    assert (parsed.guid, parsed.first_name, parsed.last_name) == ("g1", "Ada", "Lovelace")


def test_json_events_stay_json_in_the_same_registry() -> None:
    content_type, body = with_protobuf().encode(Promoted(guid="g1"))
    assert (content_type, body) == ("application/json", b'{"guid":"g1"}')


def test_decoding_follows_the_content_type_of_the_message() -> None:
    codecs = with_protobuf(messages={"employee.created": EmployeeMessage})
    pb = EmployeeMessage(guid="g2", first_name="Grace", last_name="Hopper").SerializeToString()
    from_ruby = codecs.decode(pb, "application/protobuf", EmployeeCreatedJSON)
    from_python = codecs.decode(
        b'{"guid":"g2","first_name":"Grace","last_name":"Hopper","email":"g@x.io"}',
        "application/json",
        EmployeeCreatedJSON,
    )
    assert from_ruby == EmployeeCreatedJSON(guid="g2", first_name="Grace", last_name="Hopper")
    assert from_python.email == "g@x.io"


def test_bad_bytes_and_missing_classes_are_reported() -> None:
    codec = ProtobufCodec()
    with pytest.raises(herald.DecodeError, match="not a valid EmployeeMessage"):
        codec.decode(b"\xff\xff\xff", EmployeeCreatedProto)
    with pytest.raises(herald.DecodeError, match="no protobuf message class"):
        codec.decode(b"", EmployeeCreatedJSON)
    with pytest.raises(herald.ConfigurationError, match=r"no\s+protobuf message class"):
        codec.encode(EmployeeCreatedJSON(guid="g", first_name="a", last_name="b"))


async def test_a_protobuf_producer_and_a_json_consumer_share_the_bus() -> None:
    received: list[tuple[str, str]] = []
    consumer = herald.Service("hr-consumer")

    @consumer.on(EmployeeCreatedJSON)
    async def record(event: EmployeeCreatedJSON, ctx: herald.Context) -> None:
        received.append((event.first_name, ctx.message.datacontenttype))

    url = f"memory://pb-{uuid.uuid4().hex[:8]}"
    codecs = with_protobuf(messages={"employee.created": EmployeeMessage})
    async with herald.connect(url, codecs=codecs) as bus:
        worker = await bus.start(consumer)
        await bus.publish(EmployeeCreatedProto(guid="1", first_name="Ada", last_name="L"))
        await bus.publish(EmployeeCreatedJSON(guid="2", first_name="Alan", last_name="T"))
        await wait_for(received, 2)
        await worker.stop()
    assert sorted(received) == [("Ada", "application/protobuf"), ("Alan", "application/json")]


async def test_a_python_protobuf_event_reaches_a_ruby_style_raw_consumer() -> None:
    raw: list[herald.Message] = []
    ruby = herald.Service("ruby-payroll")

    @ruby.on("employee.*")
    async def take(message: herald.Message) -> None:
        raw.append(message)

    async with herald.connect(f"memory://pb-{uuid.uuid4().hex[:8]}", codecs=with_protobuf()) as bus:
        worker = await bus.start(ruby)
        await bus.publish(EmployeeCreatedProto(guid="g9", first_name="Ken", last_name="T"))
        await wait_for(raw, 1)
        await worker.stop()
    assert raw[0].datacontenttype == "application/protobuf"
    assert EmployeeMessage.FromString(raw[0].body).first_name == "Ken"


async def test_giftcards_issues_a_card_for_a_protobuf_employee(workdir: Path) -> None:
    db = Database(f"sqlite:///{workdir}/giftcards.db", metadata)
    await db.create_tables()
    message = herald.Message(
        type="employee.created",
        body=EmployeeMessage(guid="rb1", first_name="Yukihiro", last_name="M").SerializeToString(),
        datacontenttype="application/protobuf",
        source="ruby-hr",
    )
    try:
        async with herald.connect(
            f"memory://pb-{uuid.uuid4().hex[:8]}", codecs=platform_codecs()
        ) as bus:
            worker = await bus.start(build_service(db))
            await bus.publish(message)

            async def issued() -> bool:
                async with db.sessions() as session:
                    cards.extend(await session.scalars(select(GiftCard)))
                return bool(cards)

            cards: list[GiftCard] = []
            await eventually(issued, timeout=10, what="a gift card", interval=0.02)
            await worker.stop()
        card = cards[0]
        assert (card.employee_guid, card.holder, card.email) == ("rb1", "Yukihiro M", "")
    finally:
        await db.close()
