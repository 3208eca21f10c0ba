"""Dead-letter admin beyond the conformance suite: fingerprints (property-based) and the
input checks of edit-and-replay."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import herald
from herald.deadletter import DeadLetter, DeadLetterReason, fingerprint
from herald.message import Message
from herald.testing import eventually

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz:()[],", min_size=1, max_size=10)
QUOTABLE = st.text(
    alphabet=st.characters(blacklist_characters="'\"\n", blacklist_categories=("Cs",)),
    max_size=20,
)
VALUE = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6).map(
        lambda f: f"{f:.3f}"
    ),
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex),
    QUOTABLE.map(lambda t: f"'{t}'"),
    QUOTABLE.map(lambda t: f'"{t}"'),
    st.datetimes().map(lambda d: d.isoformat()),
)
KINDS = ("number", "uuid", "quoted")


def letter(error_type: str, error: str) -> DeadLetter:
    reason = DeadLetterReason("svc.thing", error_type, error, 1)
    return DeadLetter(Message(type="thing", body=b"{}"), reason)


def value_of(kind: str) -> st.SearchStrategy[str]:
    return {
        "number": st.integers(-(10**9), 10**9).map(str),
        "uuid": st.uuids().map(str),
        "quoted": QUOTABLE.map(lambda t: f"'{t}'"),
    }[kind]


@st.composite
def two_instances(draw: st.DrawFn) -> tuple[str, str]:
    """One message template, filled twice with different values of the same kinds."""
    words = draw(st.lists(WORDS, min_size=1, max_size=5))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=len(words), max_size=len(words)))
    first = [draw(value_of(kind)) for kind in kinds]
    second = [draw(value_of(kind)) for kind in kinds]
    join = lambda values: " ".join(f"{w} {v}" for w, v in zip(words, values, strict=True))  # noqa: E731
    return join(first), join(second)


@settings(max_examples=50)
@given(two_instances(), st.sampled_from(["ValueError", "KeyError", "Reject"]))
def test_the_same_failure_with_other_values_has_one_fingerprint(
    pair: tuple[str, str], error_type: str
) -> None:
    first, second = pair
    assert fingerprint(letter(error_type, first)) == fingerprint(letter(error_type, second))


@settings(max_examples=50)
@given(st.lists(st.one_of(WORDS, VALUE), max_size=8).map(" ".join))
def test_a_fingerprint_is_its_own_shape_and_has_no_values_left(text: str) -> None:
    found = fingerprint(letter("ValueError", text))
    assert found.startswith("ValueError: ")
    shape = found.removeprefix("ValueError: ")
    assert fingerprint(letter("ValueError", shape)) == found
    assert not any(ch.isdigit() for ch in shape), shape


@settings(max_examples=50)
@given(st.text(max_size=600), st.text(max_size=50))
def test_any_text_has_a_bounded_fingerprint_naming_its_type(text: str, error_type: str) -> None:
    found = fingerprint(letter(error_type, text))
    assert len(found) <= 500
    assert found.startswith((" ".join(error_type.split()) or "?")[:400])


def test_different_exception_types_or_wordings_differ() -> None:
    assert fingerprint(letter("KeyError", "'a'")) != fingerprint(letter("ValueError", "'a'"))
    assert fingerprint(letter("ValueError", "no salary for 3")) != fingerprint(
        letter("ValueError", "no email for 3")
    )


# --- edit-and-replay: the edited body is input ----------------------------------------


class Tick(herald.Event, type="admin.tick"):
    n: int


@pytest.fixture
async def bus() -> AsyncIterator[herald.Bus]:
    """A bus whose service ``admin`` has one dead letter, a Tick."""
    service = herald.Service("admin")

    @service.on(Tick)
    async def refuse(event: Tick) -> None:
        raise herald.Reject("no")

    async with herald.connect(f"memory://admin-{uuid.uuid4().hex[:8]}") as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=1))

        async def dead() -> bool:
            return len(await bus.dead_letters("admin")) == 1

        await eventually(dead, what="a dead letter")
        await worker.stop()
        yield bus


async def only_id(bus: herald.Bus) -> str:
    (letter,) = await bus.dead_letters("admin")
    return letter.message.id


@pytest.mark.parametrize(
    ("body", "headers", "event_class", "error", "problem"),
    [
        (b'{"n": ', None, None, herald.DecodeError, "edited body is not valid JSON"),
        (b'{"n": "x"}', None, Tick, herald.ValidationError, "invalid Tick: n: "),
        (b"x" * (16 * 1024 * 1024 + 1), None, None, herald.MessageTooLargeError, "at most"),
        (b'{"n": 2}', {"x-a": 3}, None, herald.HeaderError, "header 'x-a'"),
    ],
)
async def test_an_invalid_edit_is_refused_and_changes_nothing(
    bus: herald.Bus,
    body: bytes,
    headers: Any,
    event_class: type[herald.Event] | None,
    error: type[Exception],
    problem: str,
) -> None:
    id = await only_id(bus)
    with pytest.raises(error, match=re.escape(problem)):
        await bus.replay_edited_dead_letter("admin", id, body, headers, event_class=event_class)
    assert await only_id(bus) == id


async def test_an_unknown_dead_letter_is_not_found(bus: herald.Bus) -> None:
    with pytest.raises(herald.NotFound, match="no dead letter 'nope' of service 'admin'"):
        await bus.replay_edited_dead_letter("admin", "nope", b'{"n": 2}')
    assert len(await bus.dead_letters("admin")) == 1
