"""Messages as NATS headers and payload.

The CloudEvents attributes travel as ``cloudEvents_*`` headers (:mod:`herald.wire`),
the message id also as ``Nats-Msg-Id`` (JetStream's de-duplication key). NATS header
values are single trimmed lines, so a value with a line break, surrounding blanks or
non-ASCII text is sent base64-encoded and its name listed in ``Herald-B64``. Header
names must be RFC 7230 tokens (nats-py refuses anything else); a message with another
name is refused before anything is sent.

>>> from herald.message import Message
>>> m = Message(type="a.b", body=b"{}", headers={"err": " two\\nlines ", "x": "1"})
>>> h = to_headers(m)
>>> h["Herald-B64"], h["x"], h["Nats-Msg-Id"] == m.id
('err', '1', True)
>>> from_headers(h, b"{}", "a.b", "fallback-id").headers == {"err": " two\\nlines ", "x": "1"}
True
>>> header_bytes({"a": "1"})
18
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

from ...errors import DecodeError, HeaderError, MessageTooLargeError, PublishError
from ...message import Message
from ...wire import MAX_ATTRIBUTE, UNDECODABLE_TYPE, decode_message, encode_headers, is_event_type

__all__ = [
    "ENCODED",
    "MSG_ID",
    "RAW_PREFIX",
    "check_fits",
    "from_headers",
    "header_bytes",
    "message_id_of",
    "to_headers",
    "undecodable",
]

MSG_ID = "Nats-Msg-Id"
ENCODED = "Herald-B64"
RAW_PREFIX = "herald-raw-"
"""An undecodable message keeps the headers it arrived with under this prefix."""
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BLOCK = len(b"NATS/1.0\r\n") + len(b"\r\n")
_LINE = len(b": \r\n")


def _plain(value: str) -> bool:
    return value.isascii() and value.isprintable() and value[:1] != " " and value[-1:] != " "


def to_headers(message: Message, msg_id: str | None = None) -> dict[str, str]:
    """NATS headers for ``message``; ``msg_id`` overrides the de-duplication key."""
    headers = encode_headers(message)
    encoded = []
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise PublishError(
                f"message {message.id}: header name {name[:100]!r} cannot travel on NATS "
                "(use letters, digits and !#$%&'*+-.^_`|~)"
            )
        if not _plain(value):
            encoded.append(name)
    for name in encoded:
        headers[name] = base64.b64encode(headers[name].encode()).decode()
    if encoded:
        headers[ENCODED] = ",".join(encoded)
    headers[MSG_ID] = msg_id or message.id
    return headers


def header_bytes(headers: Mapping[str, str]) -> int:
    """The size of the header block nats-py sends for ``headers`` (from :func:`to_headers`:
    ASCII only), which counts against the server's ``max_payload`` with the body."""
    return _BLOCK + sum(len(name) + len(value) + _LINE for name, value in headers.items())


def check_fits(message: Message, headers: Mapping[str, str], limit: int) -> None:
    """Raise :class:`herald.MessageTooLargeError` unless body and header block together
    fit in ``limit`` bytes. nats-py checks the body alone, and the server closes the
    connection on a message over its ``max_payload``, so this is checked first."""
    room = limit - header_bytes(headers)
    if len(message.body) > room:
        raise MessageTooLargeError(
            message.id,
            len(message.body),
            max(room, 0),
            f"NATS (with its {header_bytes(headers):,} bytes of headers, in {limit:,})",
        )


def from_headers(
    raw: Mapping[str, str] | None, body: bytes, default_type: str | None, message_id: str
) -> Message:
    """Rebuild a message from received headers (JetStream's ``Nats-*`` ones dropped).

    ``message_id`` is used when the message carries no id of its own (neither a
    CloudEvents id nor a ``Nats-Msg-Id``). Raises :class:`herald.DecodeError` or
    :class:`herald.HeaderError`, nothing else.
    """
    raw = raw or {}
    encoded = set(filter(None, str(raw.get(ENCODED, "")).split(",")))
    headers: dict[str, str] = {}
    for key, value in raw.items():
        if key == ENCODED or key.startswith("Nats-"):
            continue
        if not _TOKEN.fullmatch(key):
            raise HeaderError(f"header name {key[:100]!r} is not a NATS header token")
        text = value
        if key in encoded:
            try:
                text = base64.b64decode(text, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise DecodeError(f"header {key!r} is not valid base64 text") from exc
        headers[key] = text
    return decode_message(
        headers, body, default_type=default_type, message_id=message_id_of(raw, message_id)
    )


def message_id_of(raw: Mapping[str, str] | None, fallback: str) -> str:
    """The ``Nats-Msg-Id`` a message was published with, else ``fallback``."""
    own = (raw or {}).get(MSG_ID)
    return own if own is not None and 0 < len(own) <= MAX_ATTRIBUTE else fallback


def undecodable(
    raw: Mapping[str, str] | None, body: bytes, event_type: str | None, message_id: str
) -> Message:
    """A best-effort message for one that cannot be decoded: the body as received,
    the type from the subject (else ``herald.undecodable``), and the received headers
    (those with token names) as ``herald-raw-<name>``, kept for its dead letter."""
    headers = {
        f"{RAW_PREFIX}{name}": value
        for name, value in (raw or {}).items()
        if _TOKEN.fullmatch(name) and len(name) <= 200
    }
    return Message(
        type=event_type if event_type and is_event_type(event_type) else UNDECODABLE_TYPE,
        body=body,
        id=message_id_of(raw, message_id),
        headers=headers,
    )
