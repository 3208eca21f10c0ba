"""Messages as Redis stream entry fields, and back.

An entry holds the CloudEvents attributes as ``cloudEvents_*`` fields (the names of
:mod:`herald.wire`), the message's own headers as fields, the body in ``body`` and,
on a retried copy, ``herald-attempt``: the attempts already made. Both names are
reserved; a header called ``body`` or ``herald-attempt`` is not carried.

What a stream holds is input: anyone with access can ``XADD`` to it. An entry that
does not decode still becomes a message (best effort) with the error that the
runtime dead-letters it with:

>>> message, previous, error = decode_entry(b"1-0", {b"body": b"{}", b"x": b"\\xff"})
>>> message.type, message.id, type(error).__name__
('herald.undecodable', '1-0', 'DecodeError')
>>> decode_entry(b"1-1", {b"body": b"{}", b"cloudEvents_type": b"a.b",
...                       b"herald-attempt": b"-3"})[2]
HeaderError("header herald-attempt: '-3' is not an attempt number (1-1000000)")
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import Any

from ...errors import DecodeError, HeaderError, MessageError
from ...headers import attempt_from
from ...message import Message
from ...wire import (
    CE_PREFIX,
    CE_PREFIXES,
    MAX_ATTRIBUTE,
    UNDECODABLE_TYPE,
    decode_message,
    encode_headers,
    is_event_type,
)

__all__ = [
    "ATTEMPT_FIELD",
    "BODY_FIELD",
    "ID_FIELD",
    "decode_entry",
    "encode_fields",
    "stored_message",
]

BODY_FIELD = "body"
ATTEMPT_FIELD = "herald-attempt"
ID_FIELD = f"{CE_PREFIX}id"
_BODY, _ATTEMPT = BODY_FIELD.encode(), ATTEMPT_FIELD.encode()
_RESERVED = frozenset((_BODY, _ATTEMPT))
_TYPE_FIELDS = tuple(f"{prefix}type" for prefix in CE_PREFIXES)
_ID_FIELDS = tuple(f"{prefix}id" for prefix in CE_PREFIXES)


def encode_fields(message: Message) -> list[bytes | str]:
    """Flat ``[name, value, ...]`` fields for XADD (or a script's arguments).

    >>> m = Message(type="a.b", body=b"{}", id="m1", headers={"body": "x", "k": "v"})
    >>> encode_fields(m)[-4:]
    ['k', 'v', 'body', b'{}']
    """
    headers = encode_headers(message)
    if BODY_FIELD in headers or ATTEMPT_FIELD in headers:
        headers = {k: v for k, v in headers.items() if k not in (BODY_FIELD, ATTEMPT_FIELD)}
    fields: list[bytes | str] = list(chain.from_iterable(headers.items()))
    fields += (BODY_FIELD, message.body)
    return fields


def decode_entry(
    entry_id: bytes, fields: Mapping[bytes, bytes]
) -> tuple[Message, int, MessageError | None]:
    """The message in an entry, the attempts made before this copy, and what was wrong
    with the entry (then the message is a best-effort one).

    An entry without a CloudEvents id takes its stream entry id, which stays the same
    however often the entry is redelivered (a retried copy keeps it as its id).
    """
    body = fields.get(_BODY, b"")
    headers: dict[Any, Any]
    try:
        headers = {k.decode(): v.decode() for k, v in fields.items() if k not in _RESERVED}
    except UnicodeDecodeError:  # decode_message names the field at fault
        headers = {k: v for k, v in fields.items() if k not in _RESERVED}
    error: MessageError | None = None
    previous = 0
    raw_attempt = fields.get(_ATTEMPT)
    if raw_attempt is not None:
        try:
            previous = attempt_from(raw_attempt.decode("ascii", errors="replace"))
        except HeaderError as exc:
            error = exc
    try:
        message = decode_message(headers, body, message_id=entry_id.decode())
    except DecodeError as exc:
        return _salvage(entry_id, fields, body), 0, exc
    return message, previous, error


def stored_message(entry_id: bytes, fields: Mapping[bytes, bytes]) -> Message:
    """The message of a stored entry, best effort when it does not decode (dead letters
    are listed whatever they hold)."""
    return decode_entry(entry_id, fields)[0]


def _salvage(entry_id: bytes, raw: Mapping[bytes, bytes], body: bytes) -> Message:
    headers = {
        k.decode(errors="replace"): v.decode(errors="replace")
        for k, v in raw.items()
        if k not in _RESERVED
    }
    try:
        return decode_message(headers, body, message_id=entry_id.decode())
    except DecodeError:
        pass
    event_type = next((headers[n] for n in _TYPE_FIELDS if n in headers), "")
    message_id = next((headers[n] for n in _ID_FIELDS if n in headers), "")
    kept = {k: v for k, v in headers.items() if not k.startswith(CE_PREFIXES)}
    return Message(
        type=event_type if is_event_type(event_type) else UNDECODABLE_TYPE,
        body=body,
        id=message_id if 0 < len(message_id) <= MAX_ATTRIBUTE else entry_id.decode(),
        headers=kept,
    )
