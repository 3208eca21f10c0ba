"""CloudEvents attributes in transport headers (binary content mode).

Herald writes the attributes as headers prefixed ``cloudEvents_`` (the AMQP 1.0
binding's convention, used on AMQP 0-9-1, NATS and Redis alike) and reads
``cloudEvents_``, ``cloudEvents:``, ``ce-`` and ``ce_`` prefixes. A message that has
none of them (e.g. from Ruby's Active Publisher) still decodes: its type is the
routing key, its id a fresh one unless the transport supplies one.

>>> m = Message(type="employee.created", body=b"{}", subject="g1", headers={"x": "1"})
>>> h = encode_headers(m)
>>> h["cloudEvents_type"], h["cloudEvents_subject"], h["x"]
('employee.created', 'g1', '1')
>>> decode_message(h, b"{}").subject
'g1'
>>> decode_message({}, b"{}", default_type="employee.created").type
'employee.created'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import DecodeError
from .message import Message

__all__ = ["CE_PREFIX", "decode_message", "encode_headers"]

CE_PREFIX = "cloudEvents_"
_PREFIXES = ("cloudEvents_", "cloudEvents:", "ce-", "ce_")
_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time", "datacontenttype")
_HEADER_TO_ATTRIBUTE = {f"{prefix}{name}": name for prefix in _PREFIXES for name in _ATTRIBUTES}


def encode_headers(message: Message) -> dict[str, str]:
    """CloudEvents attributes as ``cloudEvents_*`` headers, plus the message's own headers."""
    headers = {f"{CE_PREFIX}{name}": value for name, value in message.attributes().items()}
    headers.update(message.headers)
    return headers


def decode_message(
    headers: Mapping[str, Any],
    body: bytes,
    *,
    default_type: str | None = None,
    content_type: str | None = None,
    message_id: str | None = None,
) -> Message:
    """Rebuild a message from transport headers; non-attribute headers stay headers."""
    attrs: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for raw_name, value in headers.items():
        name = raw_name if type(raw_name) is str else _text(raw_name)
        text = value if type(value) is str else _text(value)
        attribute = _HEADER_TO_ATTRIBUTE.get(name)
        if attribute is None:
            extra[name] = text
        else:
            attrs[attribute] = text
    attrs.setdefault("type", default_type)
    if not attrs.get("type"):
        raise DecodeError("message has no CloudEvents type and no routing key to take it from")
    if content_type and "datacontenttype" not in attrs:
        attrs["datacontenttype"] = content_type
    if message_id and "id" not in attrs:
        attrs["id"] = message_id
    try:
        return Message.from_attributes(attrs, body, extra)
    except (ValueError, TypeError) as exc:
        raise DecodeError(f"invalid CloudEvents attributes: {exc}") from exc


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)
