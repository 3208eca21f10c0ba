"""A message as a row: one column per CloudEvents attribute, extension headers as
JSON, the body as a blob — readable with any SQLite client, and cheap to decode.

SQLite has no CloudEvents binding: the columns are the attributes' names. A row whose
``datacontenttype`` is ``application/cloudevents+json`` holds a structured event in
its body (written by another program); the envelope's attributes are the message's,
its ``headers`` column adds headers.

The file is shared by every process that can open it, so a row is input like any
other: :func:`decode_row` never raises. A row it cannot rebuild comes back with
``error`` set (a :class:`herald.DecodeError` or :class:`herald.HeaderError`) and a
best-effort message, which the runtime dead-letters.

>>> from herald.message import Message
>>> row = decode_row(7, 1, encode_message(Message(type="invoice.created", body=b"{}")))
>>> row.message.type, row.attempt, row.error
('invoice.created', 1, None)
>>> bad = list(encode_message(Message(type="invoice.created", body=b"{}")))
>>> bad[4] = "yesterday"
>>> decode_row(7, 1, bad).error
DecodeError("time column 'yesterday' is not an RFC 3339 timestamp")
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ...errors import DecodeError, HeaderError, MessageError
from ...headers import MAX_ATTEMPT
from ...message import Message
from ...wire import (
    MAX_ATTRIBUTE,
    UNDECODABLE_TYPE,
    content_id,
    decode_structured,
    is_event_type,
    is_structured,
)

__all__ = ["COLUMNS", "MESSAGE_COLUMNS_SQL", "Encoded", "Row", "decode_row"]

COLUMNS = (
    "type", "id", "source", "subject", "time", "datacontenttype", "specversion", "headers", "body",
)  # fmt: skip
MESSAGE_COLUMNS_SQL = """
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    source TEXT NOT NULL,
    subject TEXT,
    time TEXT NOT NULL,
    datacontenttype TEXT NOT NULL,
    specversion TEXT NOT NULL,
    headers TEXT NOT NULL DEFAULT '{}',
    body BLOB NOT NULL"""
Encoded = tuple[str, str, str, str | None, str, str, str, str, bytes]
"""The values of :data:`COLUMNS` for one message; ``[0]`` is its type."""
_ATTRIBUTES = COLUMNS[:7]
_MAX_HEADERS_JSON = 1024 * 1024
_TEXT = {str}


@dataclass(slots=True)
class Row:
    """A claimed delivery: its row id, the attempt it was leased as (``token``, as
    stored), the attempt number, the message and what was wrong with the row."""

    seq: int
    token: object
    attempt: int
    message: Message
    error: MessageError | None = None


def encode_message(message: Message) -> Encoded:
    headers = json.dumps(dict(message.headers), separators=(",", ":")) if message.headers else "{}"
    return (
        message.type,
        message.id,
        message.source,
        message.subject,
        message.time.isoformat(),
        message.datacontenttype,
        message.specversion,
        headers,
        message.body,
    )


def decode_row(seq: int, token: object, values: Sequence[Any]) -> Row:
    """The delivery a row holds; whatever is wrong with the row is in ``error``."""
    try:
        message = decode(values)
    except DecodeError as exc:
        return Row(seq, token, 1, best_effort(values), exc)
    if type(token) is not int or not 1 <= token <= MAX_ATTEMPT:
        error = HeaderError(f"attempt column: {str(token)[:64]!r} is not an attempt number")
        return Row(seq, token, 1, message, error)
    return Row(seq, token, token, message)


def decode(values: Sequence[Any]) -> Message:
    """The message from the values of :data:`COLUMNS`; raises only :class:`DecodeError`.

    The checks are those of :func:`herald.wire.decode_message`, on columns."""
    event_type, message_id, source, subject, when, content_type, version, headers, body = values
    texts = (event_type, message_id, source, when, content_type, version, subject or "")
    if set(map(type, texts)) != _TEXT:
        _refuse_types(values)
    if max(map(len, texts)) > MAX_ATTRIBUTE:
        raise DecodeError(f"a column of the row is over {MAX_ATTRIBUTE} characters long")
    if not is_event_type(event_type):
        raise DecodeError(f"type column {event_type[:200]!r} is not an event type")
    if type(body) is not bytes:
        raise DecodeError(f"body column holds {_kind(body)}, not a blob")
    try:
        parsed = datetime.fromisoformat(when)
    except ValueError:
        raise DecodeError(f"time column {when[:64]!r} is not an RFC 3339 timestamp") from None
    extra = _headers(headers)
    if content_type != "application/json" and is_structured(content_type):
        return decode_structured(body, content_type, extra)
    return Message(
        type=event_type,
        body=body,
        id=message_id or content_id(event_type, extra, body),
        source=source or "herald",
        subject=subject or None,
        time=parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC),
        datacontenttype=content_type or "application/json",
        specversion=version or "1.0",
        headers=extra,
    )


def _refuse_types(values: Sequence[Any]) -> None:
    for name, value in zip(_ATTRIBUTES, values, strict=False):
        if type(value) is not str and (value is not None or name != "subject"):
            raise DecodeError(f"{name} column holds {_kind(value)}, not text")


def best_effort(values: Sequence[Any]) -> Message:
    """What can be salvaged from a row :func:`decode` refused: its body and type."""
    event_type, body = values[0], values[8]
    if not (isinstance(event_type, str) and is_event_type(event_type)):
        event_type = UNDECODABLE_TYPE
    if isinstance(body, str):
        body = body.encode("utf-8", "replace")
    elif not isinstance(body, bytes):
        body = b"" if body is None else str(body).encode()
    message_id = values[1]
    if not (isinstance(message_id, str) and 0 < len(message_id) <= MAX_ATTRIBUTE):
        message_id = content_id(event_type, {}, body)
    return Message(type=event_type, body=body, id=message_id)


def _headers(raw: object) -> dict[str, str]:
    if raw == "{}":
        return {}
    if type(raw) is not str or len(raw) > _MAX_HEADERS_JSON:
        raise DecodeError(f"headers column holds {_kind(raw)}, not a JSON object")
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        raise DecodeError(f"headers column is not JSON: {raw[:64]!r}") from None
    if not isinstance(parsed, dict) or not all(type(v) is str for v in parsed.values()):
        raise DecodeError(f"headers column is not a JSON object of strings: {raw[:64]!r}")
    return parsed


@functools.lru_cache(maxsize=4096)
def _kind(value: object) -> str:
    if isinstance(value, str | bytes):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__
