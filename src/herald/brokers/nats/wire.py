"""Messages as NATS headers and payload.

The CloudEvents attributes travel as ``cloudEvents_*`` headers (:mod:`herald.wire`),
the message id also as ``Nats-Msg-Id`` (JetStream's de-duplication key). NATS header
values are single trimmed lines, so a value with a line break, surrounding blanks or
non-ASCII text is sent base64-encoded and its name listed in ``Herald-B64``.

>>> from herald.message import Message
>>> m = Message(type="a.b", body=b"{}", headers={"err": " two\\nlines ", "x": "1"})
>>> h = to_headers(m)
>>> h["Herald-B64"], h["x"], h["Nats-Msg-Id"] == m.id
('err', '1', True)
>>> from_headers(h, b"{}", "a.b").headers == {"err": " two\\nlines ", "x": "1"}
True
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from ..errors import DecodeError
from ..message import Message, new_message_id
from ..wire import decode_message, encode_headers

__all__ = ["ENCODED", "MSG_ID", "fallback_message", "from_headers", "to_headers"]

MSG_ID = "Nats-Msg-Id"
ENCODED = "Herald-B64"


def _plain(value: str) -> bool:
    return value.isascii() and value.isprintable() and value[:1] != " " and value[-1:] != " "


def to_headers(message: Message, msg_id: str | None = None) -> dict[str, str]:
    """NATS headers for ``message``; ``msg_id`` overrides the de-duplication key."""
    headers = encode_headers(message)
    encoded = [name for name, value in headers.items() if not _plain(value)]
    for name in encoded:
        headers[name] = base64.b64encode(headers[name].encode()).decode()
    if encoded:
        headers[ENCODED] = ",".join(encoded)
    headers[MSG_ID] = msg_id or message.id
    return headers


def from_headers(raw: Mapping[str, Any] | None, body: bytes, default_type: str | None) -> Message:
    """Rebuild a message from received headers (JetStream's ``Nats-*`` ones dropped)."""
    raw = raw or {}
    encoded = set(filter(None, str(raw.get(ENCODED, "")).split(",")))
    headers: dict[str, str] = {}
    for name, value in raw.items():
        key = str(name)
        if key == ENCODED or key.startswith("Nats-"):
            continue
        text = str(value)
        if key in encoded:
            try:
                text = base64.b64decode(text, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise DecodeError(f"header {key!r} is not valid base64 text") from exc
        headers[key] = text
    return decode_message(headers, body, default_type=default_type, message_id=raw.get(MSG_ID))


def fallback_message(
    raw: Mapping[str, Any] | None, body: bytes, default_type: str | None
) -> Message:
    """A message whose headers cannot be decoded, kept as received for its dead letter:
    the received headers become ``herald-raw-<name>`` headers."""
    raw = raw or {}
    return Message(
        type=default_type or "unknown",
        body=body,
        id=str(raw.get(MSG_ID) or new_message_id()),
        headers={f"herald-raw-{key}": str(value) for key, value in raw.items()},
    )
