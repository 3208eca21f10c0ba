"""Messages as Kafka records: the CloudEvents Kafka binding (binary mode).

Attributes travel as ``ce_*`` headers, ``datacontenttype`` as ``content-type``, the
ordering key (the ``subject``) as the record key, which is the binding's
``partitionkey``: one key always lands on one partition. A record without
``ce_subject`` takes its key as the subject; a record whose ``content-type`` is
``application/cloudevents+json`` is a structured event, read from its value
(:func:`herald.wire.decode_message`). Herald's own bookkeeping on retry
topics (``herald-attempt``, ``herald-kafka-due``) is read here and never reaches
handlers.

>>> m = Message(type="employee.created", body=b"{}", subject="g1", headers={"x": "1"})
>>> key, headers = encode(m)
>>> key, dict(headers)["ce_type"], dict(headers)["content-type"]
(b'g1', b'employee.created', b'application/json')
>>> back = decode(key, headers, b"{}", "employee.created")
>>> back.message == m, back.attempt, back.error
(True, 1, None)
>>> bad = decode(None, [("ce_type", b"\\xff")], b"{}", "employee.created")
>>> bad.message.type, type(bad.error).__name__
('employee.created', 'DecodeError')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...errors import HeaderError, MessageError
from ...headers import ATTEMPT, attempt_from
from ...message import Message
from ...wire import UNDECODABLE_TYPE, decode_message, encode_headers

__all__ = ["DUE", "Decoded", "Header", "decode", "encode"]

Header = tuple[str, bytes]
DUE = "herald-kafka-due"
"""Unix milliseconds a record on a retry topic is due."""
_CONTENT_TYPE = "content-type"
_PARTITION_KEY = "ce_partitionkey"
_OURS = (DUE, ATTEMPT)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A record rebuilt: the message, its attempt and due time, or why it is bad."""

    message: Message
    attempt: int = 1
    due: int = 0
    error: MessageError | None = None


def encode(
    message: Message, *, attempt: int = 1, due: int = 0
) -> tuple[bytes | None, list[Header]]:
    """The record key and headers of a message (plus attempt and due time on retries)."""
    headers: list[Header] = [
        (name, value.encode())
        for name, value in encode_headers(message, prefix="ce_", content_type=False).items()
        if name not in _OURS
    ]
    headers.append((_CONTENT_TYPE, message.datacontenttype.encode()))
    if attempt > 1:
        headers.append((ATTEMPT, str(attempt).encode()))
    if due:
        headers.append((DUE, str(due).encode()))
    key = message.subject.encode() if message.subject is not None else None
    return key, headers


def decode(
    key: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    body: bytes,
    default_type: str | None,
    *,
    retried: bool = False,
) -> Decoded:
    """Rebuild a record; never raises. ``retried``: it came from a retry topic, where
    Herald's attempt and due time are read (elsewhere a due time is ignored)."""
    fields: dict[str, bytes] = {}
    for name, value in headers:
        fields[name] = value
    content_type = fields.pop(_CONTENT_TYPE, None)
    fields.pop(_PARTITION_KEY, None)
    raw_attempt = fields.pop(ATTEMPT, None)
    raw_due = fields.pop(DUE, None)
    try:
        if key is not None and "ce_subject" not in fields:
            fields["ce_subject"] = key
        message = decode_message(
            fields,
            body,
            default_type=default_type,
            content_type=_text(content_type, _CONTENT_TYPE) if content_type is not None else None,
        )
    except MessageError as exc:
        fallback = Message(type=default_type or UNDECODABLE_TYPE, body=body)
        return Decoded(fallback, error=exc)
    try:
        attempt = attempt_from(_text(raw_attempt, ATTEMPT)) if raw_attempt is not None else 1
        due = _due(raw_due) if retried and raw_due is not None else 0
    except MessageError as exc:
        return Decoded(message, error=exc)
    return Decoded(message, attempt, due)


def _text(value: bytes, name: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise HeaderError(f"header {name} is not UTF-8") from None


def _due(raw: bytes) -> int:
    text = _text(raw, DUE)
    if len(text) <= 16 and text.isascii() and text.isdigit():
        return int(text)
    raise HeaderError(f"header {DUE}: {text[:40]!r} is not a time in Unix milliseconds")
