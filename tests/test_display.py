"""What the CLI prints from hostile messages: no crash, nothing a terminal acts on."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

import herald
from herald.cli_commands import describe
from herald.cli_dlq import dead_letter_json, dead_letter_table

DEEP = b"[" * 50_000 + b"]" * 50_000
ESCAPES = "\x1b[2J\x1b]0;owned\x07\x9b31m\u202e\r\n"


def letter(message: herald.Message) -> herald.DeadLetter:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    reason = herald.DeadLetterReason("q.x", "E", f"bad {ESCAPES}", 1, when, when)
    return herald.DeadLetter(message, reason)


def hostile(body: bytes = DEEP) -> herald.Message:
    return herald.Message(
        type="x.y", body=body, id=f"id{ESCAPES}", subject=ESCAPES, headers={ESCAPES: ESCAPES}
    )


def assert_inert(text: str) -> None:
    for char in ("\x1b", "\x07", "\x9b", "\u202e", "\r"):
        assert char not in text, f"{char!r} reached the terminal"


@pytest.mark.parametrize("as_json", [False, True])
def test_tail_lines_survive_deep_nesting_and_escapes(as_json: bool) -> None:
    line = describe(hostile(), as_json=as_json)
    assert_inert(line)
    assert "\n" not in line
    if as_json:
        data = json.loads(line)
        assert data["body"].startswith("[[[") and data["id"] == f"id{ESCAPES}"


def test_dlq_list_json_and_table_survive_deep_nesting_and_escapes() -> None:
    line = dead_letter_json(letter(hostile()))
    assert_inert(line)
    assert json.loads(line)["error"] == f"bad {ESCAPES}"
    table = dead_letter_table([letter(hostile())])
    assert_inert(table)
    assert len(table.splitlines()) == 2, "one header row, one row per dead letter"


@given(body=st.binary(max_size=2000), text=st.text(max_size=200))
def test_any_message_prints_as_one_inert_line(body: bytes, text: str) -> None:
    message = herald.Message(
        type="x.y", body=body, id=text or "i", subject=text, headers={text: text}
    )
    for as_json in (False, True):
        line = describe(message, as_json=as_json)
        assert_inert(line)
        assert "\n" not in line
    assert json.loads(dead_letter_json(letter(message)))["key"] == (text or None)
