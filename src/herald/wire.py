"""CloudEvents attributes in transport headers (binary content mode).

Herald writes the attributes as headers prefixed ``cloudEvents_`` (the AMQP 1.0
binding's convention, used on AMQP 0-9-1, Redis and SQLite alike) and reads
``cloudEvents_``, ``cloudEvents:``, ``ce-`` and ``ce_`` prefixes. A message that has
none of them (e.g. from Ruby's Active Publisher) still decodes: its type is the
routing key, and its id the transport's, or else one derived from its content, so
that every redelivery of it carries the same id (the inbox relies on that).

Whatever arrives is input: :func:`decode_message` raises :class:`herald.DecodeError`
naming the attribute at fault, and nothing else.

>>> m = Message(type="employee.created", body=b"{}", subject="g1", headers={"x": "1"})
>>> h = encode_headers(m)
>>> h["cloudEvents_type"], h["cloudEvents_subject"], h["x"]
('employee.created', 'g1', '1')
>>> decode_message(h, b"{}").subject
'g1'
>>> plain = decode_message({}, b"{}", default_type="employee.created")
>>> plain.type, plain.id == decode_message({}, b"{}", default_type="employee.created").id
('employee.created', True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from .errors import DecodeError
from .message import Message
from .topic import is_pattern, validate_pattern

__all__ = [
    "CE_PREFIX",
    "CE_PREFIXES",
    "MAX_ATTRIBUTE",
    "UNDECODABLE_TYPE",
    "content_id",
    "decode_message",
    "encode_headers",
    "is_event_type",
]

CE_PREFIX = "cloudEvents_"
CE_PREFIXES = ("cloudEvents_", "cloudEvents:", "ce-", "ce_")
_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time", "datacontenttype")
_HEADER_TO_ATTRIBUTE = {f"{prefix}{name}": name for prefix in CE_PREFIXES for name in _ATTRIBUTES}
MAX_ATTRIBUTE = 4096
"""Longest attribute value accepted (ids, sources, subjects, types)."""
UNDECODABLE_TYPE = "herald.undecodable"
"""The type of a best-effort message rebuilt from input that could not be decoded."""


def encode_headers(message: Message) -> dict[str, str]:
    """CloudEvents attributes as ``cloudEvents_*`` headers, plus the message's own headers."""
    headers = {f"{CE_PREFIX}{name}": value for name, value in message.attributes().items()}
    headers.update(message.headers)
    return headers


def decode_message(
    headers: Mapping[Any, Any],
    body: bytes,
    *,
    default_type: str | None = None,
    content_type: str | None = None,
    message_id: str | None = None,
) -> Message:
    """Rebuild a message from transport headers; non-attribute headers stay headers."""
    attrs: dict[str, str] = {}
    extra: dict[str, str] = {}
    for raw_name, value in headers.items():
        name = raw_name if type(raw_name) is str else _text(raw_name, "header name")
        text = value if type(value) is str else _text(value, f"header {name!r}")
        attribute = _HEADER_TO_ATTRIBUTE.get(name)
        if attribute is None:
            extra[name] = text
        else:
            if len(text) > MAX_ATTRIBUTE:
                raise DecodeError(f"CloudEvents {attribute} is {len(text)} characters long")
            attrs[attribute] = text
    event_type = attrs.get("type") or default_type
    if not event_type:
        raise DecodeError("message has no CloudEvents type and no routing key to take it from")
    if not is_event_type(event_type):
        raise DecodeError(f"CloudEvents type {event_type[:200]!r} is not an event type")
    attrs["type"] = event_type
    if content_type and "datacontenttype" not in attrs:
        attrs["datacontenttype"] = content_type
    if "id" not in attrs:
        attrs["id"] = message_id or content_id(event_type, extra, body)
    try:
        return Message.from_attributes(attrs, body, extra)
    except (ValueError, TypeError) as exc:
        raise DecodeError(f"invalid CloudEvents attributes: {exc}") from exc


def content_id(event_type: str, headers: Mapping[str, str], body: bytes) -> str:
    """An id for a message that arrived without one, the same for every copy of it:
    a hash of its type, headers and body (two identical id-less messages share it)."""
    digest = hashlib.blake2b(event_type.encode(), digest_size=16)
    for name in sorted(headers):
        digest.update(b"\0" + name.encode("utf-8", "replace") + b"=")
        digest.update(headers[name].encode("utf-8", "replace"))
    digest.update(b"\0\0" + body)
    return f"h{digest.hexdigest()}"


@lru_cache(maxsize=4096)
def is_event_type(text: str) -> bool:
    """Whether ``text`` is a plain event type: a valid topic word list, no wildcards,
    at most :data:`MAX_ATTRIBUTE` characters.

    >>> is_event_type("employee.created"), is_event_type("employee.*"), is_event_type("")
    (True, False, False)
    """
    if not text or len(text) > MAX_ATTRIBUTE:
        return False
    try:
        validate_pattern(text)
    except ValueError:
        return False
    return not is_pattern(text)


def _text(value: object, what: str) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{what} is not UTF-8: {exc.reason} at byte {exc.start}") from None
    return str(value)
