"""HeraldClient parses received header blocks exactly as nats-py does (no server)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client

from herald.brokers.nats.connection import HeraldClient

# Bytes that matter to the parser: separators, every kind of blank (str.isspace has
# \x1c-\x1f that bytes.strip does not), non-ASCII and invalid UTF-8.
_PIECES = st.sampled_from(
    [b":", b": ", b"\r\n", b"\r", b"\n", b" ", b"\t", b"\x0b", b"\x0c", b"\x1c", b"\x1f",
     b"\x85", b"\xc3\xa9", b"\xff", b"ce-id", b"Nats-Msg-Id", b"a", b"1", b"-", b"%20"]
)  # fmt: skip


@given(st.lists(_PIECES, max_size=40).map(b"".join))
def test_parses_any_block_as_nats_py_does(raw: bytes) -> None:
    assert HeraldClient._parse_header_lines(raw) == Client._parse_header_lines(raw)


def test_parses_a_herald_event_block_as_nats_py_does() -> None:
    raw = (
        b"ce-specversion: 1.0\r\nce-id: 01a2\r\nce-type: bench.event\r\n"
        b"ce-time: 2026-12-02T11:45:14+00:00\r\nNats-Msg-Id: 01a2\r\nx:\tv \r\n\r\n"
    )
    parsed = HeraldClient._parse_header_lines(raw)
    assert parsed == Client._parse_header_lines(raw)
    assert parsed["x"] == "v" and parsed["Nats-Msg-Id"] == "01a2"
