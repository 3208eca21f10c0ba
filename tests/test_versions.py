"""Event versions: declared on the class, carried in the ``dataversion`` header, read
by the consumer's own version (newer as is, older through upcasters), and a malformed
header or an unconvertible payload refused with a reason naming it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import herald
from herald.codec import CodecRegistry, default_codecs
from herald.event import MAX_VERSION
from herald.message import Message
from herald.testing.recorder import eventually
from herald.testing.scenarios.common import wait_dead_letters
from herald.versions import VERSION, version_from, version_of
from herald.wire import decode_message


class Moved(herald.Event, type="test.moved"):
    office: str


class MovedV2(herald.Event, type="test.moved", version=2):
    office: str
    floor: int


@MovedV2.upcast_from(1)
def _ground_floor(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "floor": 0}


class MovedV3(MovedV2, version=3):
    """Inherits the step from 1; adds the step from 2."""

    desk: str


@MovedV3.upcast_from(2)
def _hot_desk(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "desk": f"{payload['office']}-{payload['floor']}"}


def _message(event: herald.Event) -> Message:
    return default_codecs.envelope(event, source="test")


def test_a_version_is_declared_and_starts_at_one_for_a_new_type() -> None:
    assert (Moved.event_version(), MovedV2.event_version(), MovedV3.event_version()) == (1, 2, 3)

    class Other(MovedV2, type="test.other"):
        pass

    assert Other.event_version() == 1 and Other.upcaster(1) is None


@pytest.mark.parametrize("bad", [0, -1, MAX_VERSION + 1, "2", True, 1.0])
def test_a_bad_version_is_refused_when_the_class_is_defined(bad: object) -> None:
    with pytest.raises(ValueError, match="version must be an integer from 1"):

        class Bad(herald.Event, type="test.bad", version=bad):  # type: ignore[arg-type]
            pass


def test_upcasters_only_come_from_older_versions_once() -> None:
    with pytest.raises(ValueError, match="only from older versions, not from 2"):
        MovedV2.upcast_from(2)
    with pytest.raises(ValueError, match="already has an upcaster from version 1"):
        MovedV2.upcast_from(1)


def test_the_version_travels_in_a_header_from_version_two_on() -> None:
    assert VERSION not in _message(Moved(office="A")).headers
    assert _message(MovedV2(office="A", floor=1)).headers[VERSION] == "2"
    # the class's version wins over a header passed by hand
    forged = default_codecs.envelope(
        MovedV2(office="A", floor=1), source="t", headers={VERSION: "9"}
    )
    assert forged.headers[VERSION] == "2"


def test_older_events_are_upcast_step_by_step_and_newer_ones_read_as_they_are() -> None:
    v1, v2 = _message(Moved(office="A")), _message(MovedV2(office="B", floor=4))
    v3 = _message(MovedV3(office="C", floor=5, desk="x"))
    assert default_codecs.read(v1, MovedV3) == MovedV3(office="A", floor=0, desk="A-0")
    assert default_codecs.read(v2, MovedV3) == MovedV3(office="B", floor=4, desk="B-4")
    assert default_codecs.read(v3, MovedV2) == MovedV2(office="C", floor=5)
    assert default_codecs.read(v3, Moved) == Moved(office="C")


class Skipping(herald.Event, type="test.moved", version=4):
    office: str


@Skipping.upcast_from(3)
def _same(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


def test_a_missing_step_names_the_version_and_how_to_register_it() -> None:
    with pytest.raises(herald.UpcastError) as caught:
        default_codecs.read(_message(Moved(office="A")), Skipping)
    assert str(caught.value) == (
        "test.moved version 1 cannot be read as version 4 (Skipping): no upcaster from "
        "version 1 (register one with @Skipping.upcast_from(1))"
    )
    assert default_codecs.read(_message(MovedV3(office="A", floor=1, desk="d")), Skipping)


def test_a_failing_or_wrong_upcaster_is_an_upcast_error() -> None:
    class Broken(herald.Event, type="test.broken", version=2):
        a: int

    @Broken.upcast_from(1)
    def _wrong(payload: dict[str, Any]) -> dict[str, Any]:
        return payload["missing"]  # type: ignore[no-any-return]

    nameless = Message(type="test.broken", body=b'{"b": 1}')
    with pytest.raises(herald.UpcastError, match="upcaster from version 1 failed: KeyError"):
        default_codecs.read(nameless, Broken)
    with pytest.raises(herald.UpcastError, match="the payload is a list, not an object"):
        default_codecs.read(Message(type="test.broken", body=b"[1]"), Broken)
    listed = Message(type="test.broken", body=b'{"missing": [1]}')
    with pytest.raises(herald.UpcastError, match="returned a list, not a dict"):
        default_codecs.read(listed, Broken)
    invalid = Message(type="test.broken", body=b'{"missing": {"a": "x"}}')
    with pytest.raises(herald.ValidationError, match=r"\(upcast from version 1\): a: "):
        default_codecs.read(invalid, Broken)


def test_a_codec_that_gives_no_payload_cannot_upcast() -> None:
    class Opaque:
        content_type = "application/x-opaque"

        def encode(self, event: herald.Event) -> bytes:
            return b""

        def decode(self, body: bytes, event_class: type[Any]) -> Any:
            raise AssertionError("not reached")

    codecs = CodecRegistry(Opaque())
    message = Message(type="test.moved", body=b"", datacontenttype="application/x-opaque")
    with pytest.raises(herald.UpcastError, match="codec does not give payloads as data"):
        codecs.read(message, MovedV2)


@given(st.integers(min_value=1, max_value=MAX_VERSION))
def test_every_version_round_trips_through_its_header(version: int) -> None:
    assert version_of({VERSION: str(version)}) == version
    assert version_of({f"ce_{VERSION}": str(version)}) == version


@given(st.text(max_size=40))
def test_anything_else_in_the_header_is_a_header_error_naming_it(text: str) -> None:
    if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_VERSION and len(text) <= 16:
        assert version_from(text) == int(text)
        return
    with pytest.raises(herald.HeaderError, match=f"^header {VERSION}: .* is not an event version"):
        version_from(text)


def test_a_structured_event_carries_its_version_as_an_extension_attribute() -> None:
    envelope = (
        b'{"specversion": "1.0", "id": "e1", "source": "s", "type": "test.moved",'
        b' "dataversion": 2, "data": {"office": "A", "floor": 3}}'
    )
    message = decode_message({"content-type": "application/cloudevents+json"}, envelope)
    assert default_codecs.read(message, MovedV3) == MovedV3(office="A", floor=3, desk="A-3")


async def test_a_pattern_handler_decodes_by_version_and_bad_headers_are_dead_lettered() -> None:
    svc = herald.Service("versions-pattern", retry=herald.RetryPolicy(attempts=2))
    got: list[MovedV2] = []

    @svc.on("test.*")
    async def moved(message: herald.Message, ctx: herald.Context) -> None:
        got.append(ctx.decode(MovedV2))

    async with herald.connect("memory://versions-pattern") as bus:
        worker = await bus.start(svc)
        await bus.publish(Moved(office="A"))
        await bus.publish(
            Message(type="test.moved", body=b'{"office": "B"}', headers={VERSION: "0"})
        )
        await eventually(lambda: bool(got), what="the version 1 event handled")
        letters = await wait_dead_letters(bus, svc.name, 1)
        await worker.stop()
    assert got == [MovedV2(office="A", floor=0)]
    (letter,) = letters
    assert letter.reason.error_type == "HeaderError"
    assert (
        letter.reason.error_message
        == f"header {VERSION}: '0' is not an event version (1-{MAX_VERSION})"
    )
    assert letter.reason.attempts == 1
