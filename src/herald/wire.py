"""CloudEvents attributes in transport headers (binary content mode), and structured
events (``application/cloudevents+json``) on the way in.

Herald writes the binary content mode: the attributes as headers with a prefix, the
data as the body. :func:`encode_headers` uses ``cloudEvents_`` (the AMQP binding's
names, which Redis and SQS use too) unless told another prefix (NATS: ``ce-``), and
leaves ``datacontenttype`` out where the transport has a content-type property (AMQP).
:func:`decode_message` reads the ``cloudEvents_``, ``cloudEvents:``, ``ce-`` and
``ce_`` prefixes, in any case. A message that has none of them (e.g. from Ruby's
Active Publisher) still decodes: its type is the routing key, and its id the
transport's, or else one derived from its content, so that every redelivery of it
carries the same id (the inbox relies on that).

A message whose content type (the transport's, a ``content-type`` header, or else
its ``datacontenttype`` attribute) is ``application/cloudevents+json`` is a
structured event: :func:`decode_structured` reads the JSON envelope, its ``data`` or
``data_base64`` becoming the body and its extension attributes headers.

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
>>> envelope = b'{"specversion": "1.0", "id": "e1", "source": "/hr", "type": "employee.created",'
>>> envelope += b' "subject": "g1", "data": {"guid": "g1"}}'
>>> event = decode_message({"content-type": "application/cloudevents+json"}, envelope)
>>> event.id, event.source, event.subject, event.body, event.datacontenttype
('e1', '/hr', 'g1', b'{"guid":"g1"}', 'application/json')
>>> decode_message({}, b'{"specversion": "0.3"}', content_type=STRUCTURED_JSON)
Traceback (most recent call last):
...
herald.errors.DecodeError: structured CloudEvent: specversion '0.3' is not 1.0
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
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
    "MAX_DEPTH",
    "STRUCTURED_JSON",
    "UNDECODABLE_TYPE",
    "content_id",
    "decode_message",
    "decode_structured",
    "encode_headers",
    "is_event_type",
    "is_structured",
]

CE_PREFIX = "cloudEvents_"
CE_PREFIXES = ("cloudEvents_", "cloudEvents:", "ce-", "ce_")
_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time", "datacontenttype")
_HEADER_TO_ATTRIBUTE = {
    spelled: name
    for prefix in CE_PREFIXES
    for name in _ATTRIBUTES
    for spelled in (f"{prefix}{name}", f"{prefix}{name}".lower())
}
"""Attribute header names, lowercased and as Herald writes them (found without lower())."""
MAX_ATTRIBUTE = 4096
"""Longest attribute value accepted (ids, sources, subjects, types)."""
MAX_DEPTH = 64
"""Deepest nesting of objects and arrays accepted in a structured event's JSON."""
STRUCTURED_JSON = "application/cloudevents+json"
"""The media type of the JSON event format (structured content mode)."""
UNDECODABLE_TYPE = "herald.undecodable"
"""The type of a best-effort message rebuilt from input that could not be decoded."""
_CONTENT_TYPE = "content-type"
_MEDIA_PREFIX = "application/cloudevents"
_JSON_MEDIA = re.compile(r"(application|text)/([a-z0-9\-.]+\+)?json\s*(;.*)?", re.IGNORECASE)
_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,64}")
_ENVELOPE_ONLY = frozenset(("data", "data_base64", "dataschema"))


def encode_headers(
    message: Message, *, prefix: str = CE_PREFIX, content_type: bool = True
) -> dict[str, str]:
    """CloudEvents attributes as ``<prefix>*`` headers, plus the message's own headers;
    ``content_type=False`` leaves ``datacontenttype`` to the transport's property.

    >>> m = Message(type="a.b", body=b"", id="m1")
    >>> sorted(encode_headers(m, prefix="ce-", content_type=False))
    ['ce-id', 'ce-source', 'ce-specversion', 'ce-time', 'ce-type']
    """
    headers = {
        f"{prefix}{name}": value
        for name, value in message.attributes().items()
        if content_type or name != "datacontenttype"
    }
    headers.update(message.headers)
    return headers


def is_structured(content_type: str | None) -> bool:
    """Whether a content type is the CloudEvents media type (structured content mode).

    >>> is_structured("application/cloudevents+json; charset=utf-8"), is_structured(None)
    (True, False)
    """
    if not content_type:
        return False
    return content_type[: len(_MEDIA_PREFIX)].lower() == _MEDIA_PREFIX


def decode_message(
    headers: Mapping[Any, Any],
    body: bytes,
    *,
    default_type: str | None = None,
    content_type: str | None = None,
    message_id: str | None = None,
) -> Message:
    """Rebuild a message from transport headers; non-attribute headers stay headers.

    A structured event (see :func:`is_structured`) is read from the body instead; the
    transport's headers other than CloudEvents attributes stay its headers."""
    attrs: dict[str, str] = {}
    extra: dict[str, str] = {}
    structured = content_type if is_structured(content_type) else None
    for raw_name, value in headers.items():
        name = raw_name if type(raw_name) is str else _text(raw_name, "header name")
        text = value if type(value) is str else _text(value, f"header {name!r}")
        attribute = _HEADER_TO_ATTRIBUTE.get(name)
        if attribute is None:
            lowered = name.lower()
            attribute = _HEADER_TO_ATTRIBUTE.get(lowered)
        else:
            lowered = ""
        if attribute is not None:
            if len(text) > MAX_ATTRIBUTE:
                raise DecodeError(f"CloudEvents {attribute} is {len(text)} characters long")
            attrs[attribute] = text
        elif lowered == _CONTENT_TYPE and is_structured(text):
            structured = structured or text
        else:
            extra[name] = text
    if structured is None and content_type is None and is_structured(attrs.get("datacontenttype")):
        structured = attrs["datacontenttype"]
    if structured is not None:
        return decode_structured(body, structured, extra)
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
    return _message(attrs, body, extra)


def decode_structured(
    body: bytes, content_type: str = STRUCTURED_JSON, headers: Mapping[str, str] | None = None
) -> Message:
    """A message from a structured event: a JSON envelope with the attributes and the
    data (``data``, or ``data_base64`` for bytes). Its extension attributes become
    headers, under ``headers`` (the transport's own, which win). Raises
    :class:`herald.DecodeError` naming what is wrong with the envelope.

    >>> decode_structured(b'{"specversion": "1.0", "id": "1", "source": "s", "type": "a.b",'
    ...                   b' "data_base64": "AAE=", "datacontenttype": "application/x"}').body
    b'\\x00\\x01'
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media != STRUCTURED_JSON:
        raise DecodeError(
            f"CloudEvents format {media[:100]!r} is not supported (only {STRUCTURED_JSON})"
        )
    try:
        envelope = json.loads(body)
    except RecursionError:
        raise DecodeError(_problem(f"nested deeper than {MAX_DEPTH} levels")) from None
    except ValueError as exc:
        raise DecodeError(_problem(f"not JSON ({str(exc)[:200]})")) from None
    if not isinstance(envelope, dict):
        raise DecodeError(_problem(f"a JSON {type(envelope).__name__}, not an object"))
    if not _shallow(envelope):
        raise DecodeError(_problem(f"nested deeper than {MAX_DEPTH} levels"))
    version = envelope.get("specversion")
    if version is None:
        raise DecodeError(_problem("required attribute 'specversion' is missing"))
    if version != "1.0":
        raise DecodeError(_problem(f"specversion {str(version)[:40]!r} is not 1.0"))
    attrs: dict[str, str] = {}
    extensions: dict[str, str] = {}
    for name, value in envelope.items():
        if value is None or name in ("data", "data_base64"):
            continue
        text = _attribute_text(name, value)
        if name in _ATTRIBUTES:
            attrs[name] = text
        elif name in _ENVELOPE_ONLY or _EXTENSION_NAME.fullmatch(name):
            extensions[name] = text
        else:
            raise DecodeError(_problem(f"{name[:64]!r} is not a CloudEvents attribute name"))
    for required in ("id", "source", "type"):
        if not attrs.get(required):
            raise DecodeError(_problem(f"required attribute {required!r} is missing"))
    if not is_event_type(attrs["type"]):
        raise DecodeError(_problem(f"type {attrs['type'][:200]!r} is not an event type"))
    data_body, default_content_type = _data(envelope, attrs.get("datacontenttype"))
    attrs.setdefault("datacontenttype", default_content_type)
    return _message(attrs, data_body, {**extensions, **(headers or {})})


def _data(envelope: Mapping[str, Any], content_type: str | None) -> tuple[bytes, str]:
    """The body a structured event's data becomes, and its content type by default."""
    data, encoded = envelope.get("data"), envelope.get("data_base64")
    if data is not None and encoded is not None:
        raise DecodeError(_problem("it has both data and data_base64"))
    if encoded is not None:
        if not isinstance(encoded, str):
            raise DecodeError(_problem("data_base64 is not a string"))
        try:
            return base64.b64decode(encoded, validate=True), "application/octet-stream"
        except (binascii.Error, ValueError):
            raise DecodeError(_problem("data_base64 is not base64")) from None
    if data is None:
        return b"", "application/json"
    if isinstance(data, str) and not _JSON_MEDIA.fullmatch(content_type or "application/json"):
        return data.encode("utf-8", "surrogatepass"), "text/plain"
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass"), "application/json"


def _attribute_text(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise DecodeError(_problem(f"attribute {name[:64]!r} is a {_json_kind(value)}"))
    if len(value) > MAX_ATTRIBUTE:
        raise DecodeError(_problem(f"attribute {name[:64]!r} is {len(value)} characters long"))
    return value


def _json_kind(value: object) -> str:
    kinds = {dict: "JSON object", list: "JSON array", float: "JSON number with a fraction"}
    return kinds.get(type(value), type(value).__name__)


def _shallow(value: dict[str, Any] | list[Any]) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def _problem(what: str) -> str:
    return f"structured CloudEvent: {what}"


def _message(attrs: Mapping[str, str], body: bytes, headers: Mapping[str, str]) -> Message:
    try:
        return Message.from_attributes(attrs, body, headers)
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
