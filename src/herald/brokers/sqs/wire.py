"""Messages as SQS/SNS message attributes and bodies, and back.

SQS has no CloudEvents binding; like the other bindingless brokers, the attributes
travel under the AMQP binding's names (``cloudEvents_type``, ``cloudEvents_id``, ...),
one message attribute each. SQS carries at most ten message attributes, so:

- the seven CloudEvents attributes take up to seven, ``herald-words`` (the number of
  words of the type, a Number the subscription filter policies match on) one;
- the message's headers go one attribute each when they all fit in the ten, have
  names SQS accepts and non-empty values; otherwise all of them travel as one JSON
  object in ``herald-headers``;
- a body that is not text SQS accepts (UTF-8 without control characters other than
  tab, newline and carriage return), or is empty, travels in the ``herald-body``
  attribute (base64; the String ``empty`` for an empty body) under a one-character
  placeholder body.

A value SQS cannot carry as a String (control characters, bytes) goes base64 in an
attribute of type ``String.base64``: SNS hands Binary attributes to SQS intact on
AWS, but moto's raw delivery stores them so that receiving them fails, and base64
text goes through both. Binary attributes other publishers send are read too. SQS
counts the body and every attribute's name, type and value against its 256 KiB
limit; :func:`encode` reports that size (a base64 value counts 4/3 of its bytes).

What arrives is input: anyone allowed to send to a queue can send anything. A
message that does not decode still becomes a message (best effort) with its error:

>>> message, error = decode({"MessageId": "m-1", "Body": "{}",
...     "MessageAttributes": {"herald-headers": {"DataType": "String", "StringValue": "[1]"}}})
>>> message.type, message.id, type(error).__name__
('herald.undecodable', 'm-1', 'DecodeError')
>>> m = Message(type="a.b", body=bytes(range(3)), subject="k 1", headers={"x": ""})
>>> out = encode(m)
>>> sorted(out.attributes)[:3], out.body
(['cloudEvents_datacontenttype', 'cloudEvents_id', 'cloudEvents_source'], '.')
>>> back, error = decode(
...     {"MessageId": "m-2", "Body": out.body, "MessageAttributes": out.attributes})
>>> (back.body, back.subject, dict(back.headers), error) == (m.body, "k 1", {"x": ""}, None)
True
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import DecodeError, MessageError, PublishError
from ...message import Message
from ...wire import (
    CE_PREFIX,
    CE_PREFIXES,
    MAX_ATTRIBUTE,
    UNDECODABLE_TYPE,
    decode_message,
    is_event_type,
)

__all__ = [
    "BASE64",
    "BODY",
    "DIRECT_MAX",
    "HEADERS",
    "MAX_ATTRIBUTES",
    "MAX_SIZE",
    "TYPE",
    "WORDS",
    "Encoded",
    "decode",
    "encode",
    "group_id",
    "token",
]

MAX_SIZE = 262_144
"""256 KiB: the most SNS publishes, and what SQS counted before it took 1 MiB."""
DIRECT_MAX = 1_048_576
"""1 MiB: the most SQS takes sent to a queue directly (dead-letter queues are made so)."""
MAX_ATTRIBUTES = 10
TYPE = f"{CE_PREFIX}type"
WORDS = "herald-words"
BODY = "herald-body"
HEADERS = "herald-headers"
BASE64 = "String.base64"
_RESERVED = frozenset((WORDS, BODY, HEADERS))
_PLACEHOLDER = "."
_TEXT = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]+")
_NAME = re.compile(r"(?!\.)(?!.*\.\.)[A-Za-z0-9_.\-]{1,256}(?<!\.)")
_TOKEN = re.compile(r"[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}")
_TYPE_NAMES = tuple(f"{prefix}type" for prefix in CE_PREFIXES)
_ID_NAMES = tuple(f"{prefix}id" for prefix in CE_PREFIXES)

Attribute = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Encoded:
    """A message in SQS's form: its body text, its message attributes and the size
    SQS counts for it (body + attribute names, types and values, in bytes)."""

    body: str
    attributes: dict[str, Attribute]
    size: int


def encode(message: Message) -> Encoded:
    """``message`` as a body and at most :data:`MAX_ATTRIBUTES` message attributes;
    :class:`herald.PublishError` for an attribute that is not valid Unicode."""
    try:
        attributes = {f"{CE_PREFIX}{k}": _value(v) for k, v in message.attributes().items()}
    except UnicodeEncodeError:
        raise PublishError(
            f"message {message.id[:100]!r} has a CloudEvents attribute that is not valid Unicode"
        ) from None
    attributes[WORDS] = {"DataType": "Number", "StringValue": str(message.type.count(".") + 1)}
    body = message.body
    if not body:
        text = _PLACEHOLDER
        attributes[BODY] = {"DataType": "String", "StringValue": "empty"}
    else:
        decoded = _as_text(body)
        if decoded is None:
            text = _PLACEHOLDER
            attributes[BODY] = _base64(body)
        else:
            text = decoded
    headers = message.headers
    if headers:
        fits = len(attributes) + len(headers) <= MAX_ATTRIBUTES and all(
            _attribute_name(name) and name not in attributes and value and _TEXT.fullmatch(value)
            for name, value in headers.items()
        )
        if fits:
            attributes.update(
                (name, {"DataType": "String", "StringValue": value})
                for name, value in headers.items()
            )
        else:
            packed = json.dumps(dict(headers), ensure_ascii=True, separators=(",", ":"))
            attributes[HEADERS] = {"DataType": "String", "StringValue": packed}
    size = len(text.encode())
    for name, attribute in attributes.items():
        value = attribute.get("BinaryValue")
        size += len(name) + len(attribute["DataType"])
        size += len(value) if value is not None else len(attribute["StringValue"].encode())
    return Encoded(text, attributes, size)


def decode(received: Mapping[str, Any]) -> tuple[Message, MessageError | None]:
    """The message an SQS ``ReceiveMessage`` entry holds, and what was wrong with it
    (then the message is a best-effort one). A message without a CloudEvents id
    takes the SQS message id, the same on every redelivery."""
    sqs_id = str(received.get("MessageId", ""))
    raw: Mapping[str, Any] = received.get("MessageAttributes") or {}
    try:
        body = _body(received.get("Body", ""), raw.get(BODY))
        headers: dict[str, Any] = {}
        for name, attribute in raw.items():
            if name not in _RESERVED:
                headers[name] = _attribute_value(attribute)
        packed = raw.get(HEADERS)
        if packed is not None:
            headers.update(_unpack(_attribute_value(packed)))
        return decode_message(headers, body, message_id=sqs_id or None), None
    except DecodeError as exc:
        return _salvage(sqs_id, received, raw), exc


def group_id(message: Message) -> str:
    """The FIFO ``MessageGroupId``: the key, so one key's messages keep their order
    (a key SQS would refuse is replaced by its hash); without a key, the message's id."""
    return token(message.subject if message.subject is not None else message.id)


def token(text: str) -> str:
    """``text`` as SQS takes it for a group or deduplication id: itself when it is
    1-128 printable ASCII characters, else ``h`` + its hash."""
    if _TOKEN.fullmatch(text):
        return text
    return "h" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _value(text: str) -> Attribute:
    if _TEXT.fullmatch(text):
        return {"DataType": "String", "StringValue": text}
    return _base64(text.encode())


def _base64(data: bytes) -> Attribute:
    return {"DataType": BASE64, "StringValue": base64.b64encode(data).decode()}


def _attribute_name(name: str) -> bool:
    return (
        _NAME.fullmatch(name) is not None
        and name not in _RESERVED
        and not name.lower().startswith(("aws.", "amazon."))
    )


def _as_text(body: bytes) -> str | None:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None
    return text if _TEXT.fullmatch(text) else None


def _attribute_value(attribute: Any) -> str | bytes:
    if not isinstance(attribute, Mapping):
        raise DecodeError("a message attribute is not a name/type/value triple")
    value = attribute.get("BinaryValue")
    if value is None:
        value = attribute.get("StringValue")
    if not isinstance(value, str | bytes):
        raise DecodeError(f"message attribute of type {attribute.get('DataType')!r} has no value")
    if attribute.get("DataType") == BASE64:
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise DecodeError("a String.base64 message attribute is not base64") from None
    return value


def _body(text: Any, attribute: Any) -> bytes:
    if attribute is None:
        return str(text).encode("utf-8", "surrogatepass")
    value = _attribute_value(attribute)
    if isinstance(value, bytes):
        return value
    if value == "empty":
        return b""
    raise DecodeError(f"{BODY} attribute {value[:40]!r} is neither Binary nor 'empty'")


def _unpack(value: str | bytes) -> dict[str, str]:
    try:
        headers = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"{HEADERS} attribute is not JSON: {exc}") from None
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise DecodeError(f"{HEADERS} attribute is not an object of strings")
    return headers


def _salvage(sqs_id: str, received: Mapping[str, Any], raw: Mapping[str, Any]) -> Message:
    texts: dict[str, str] = {}
    for name, attribute in raw.items():
        try:
            value = _attribute_value(attribute)
        except DecodeError:
            continue
        texts[str(name)] = value.decode(errors="replace") if isinstance(value, bytes) else value
    try:
        body = _body(received.get("Body", ""), raw.get(BODY))
    except DecodeError:
        body = str(received.get("Body", "")).encode("utf-8", "replace")
    if HEADERS in texts:
        with contextlib.suppress(DecodeError):
            texts.update(_unpack(texts[HEADERS]))
    event_type = next((texts[n] for n in _TYPE_NAMES if n in texts), "")
    message_id = next((texts[n] for n in _ID_NAMES if n in texts), "")
    kept = {k: v for k, v in texts.items() if not k.startswith(CE_PREFIXES) and k not in _RESERVED}
    return Message(
        type=event_type if is_event_type(event_type) else UNDECODABLE_TYPE,
        body=body,
        id=message_id if 0 < len(message_id) <= MAX_ATTRIBUTE else sqs_id or "unknown",
        headers=kept,
    )
