"""Herald messages as AMQP 0-9-1 properties and headers, and back.

This follows the CloudEvents AMQP binding's binary content mode (there is none for
0-9-1): the attributes go into ``cloudEvents_*`` headers (see :mod:`herald.wire`)
except ``datacontenttype``, which is the ``content_type`` property; the id also goes
into ``message_id``, the type into ``type`` and the time into ``timestamp``. A
message whose ``content_type`` is ``application/cloudevents+json`` is a structured
event and is read from its body; one that older Herald wrote with a
``cloudEvents_datacontenttype`` header reads as before. Messages are persistent
(``delivery_mode`` 2). Which attempt a delivery is travels in the ``herald-attempt``
header (an integer, absent on a first attempt); on quorum queues RabbitMQ adds
``x-delivery-count``.
A ``reply_to`` property naming a direct reply-to channel becomes the
``herald-reply-to`` header.

What arrives is input: :func:`read` raises :class:`herald.DecodeError` and
:func:`attempt_header` / :func:`delivery_count` raise :class:`herald.HeaderError`;
:func:`best_effort` always gives some message, for the dead letter.

>>> m = Message(type="employee.created", body=b"{}", id="m1")
>>> p = properties_for(m, attempt=2)
>>> p.message_id, p.content_type, p.delivery_mode, p.headers["herald-attempt"]
('m1', 'application/json', 2, 2)
>>> p.headers["cloudEvents_id"], "cloudEvents_datacontenttype" in p.headers
('m1', False)
>>> attempt_header({"herald-attempt": 2}), attempt_header({})
(2, 1)
>>> attempt_header({"herald-attempt": -1000000000})
Traceback (most recent call last):
...
herald.errors.HeaderError: header herald-attempt: '-1000000000' is not an attempt number (1-1000000)
>>> attempt_of(3, redelivered=True, count=None, released=0)
4
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from ...errors import HeaderError
from ...headers import ATTEMPT, MAX_ATTEMPT, REPLY_TO, attempt_from
from ...message import Message
from ...wire import (
    CE_PREFIXES,
    MAX_ATTRIBUTE,
    UNDECODABLE_TYPE,
    content_id,
    decode_message,
    encode_headers,
    is_event_type,
)
from .topology import is_reply_address

__all__ = [
    "DELIVERY_COUNT",
    "attempt_header",
    "attempt_of",
    "best_effort",
    "delivery_count",
    "header_text",
    "properties_for",
    "read",
]

DELIVERY_COUNT = "x-delivery-count"
_TRANSPORT_HEADERS = frozenset({ATTEMPT, DELIVERY_COUNT, "x-death"})
_TRANSPORT_PREFIXES = ("x-first-death-", "x-last-death-")


def properties_for(message: Message, attempt: int = 1) -> spec.Basic.Properties:
    headers: dict[str, Any] = encode_headers(message, content_type=False)
    if attempt > 1:
        headers[ATTEMPT] = attempt
    return spec.Basic.Properties(
        content_type=message.datacontenttype,
        delivery_mode=2,
        message_id=message.id,
        timestamp=message.time,
        message_type=message.type,
        headers=headers,
    )


def read(delivered: DeliveredMessage) -> Message:
    """The message; raises :class:`herald.DecodeError` for bad attributes. Without a
    ``message_id`` property or CloudEvents id its id is derived from its content, so
    every redelivery of it has the same one."""
    props = delivered.header.properties
    headers: dict[str, str] = {}
    for name, value in (props.headers or {}).items():
        if name in _TRANSPORT_HEADERS or name.startswith(_TRANSPORT_PREFIXES):
            continue
        headers[name] = value if type(value) is str else header_text(value)
    if props.reply_to and is_reply_address(props.reply_to):
        headers[REPLY_TO] = props.reply_to
    return decode_message(
        headers,
        delivered.body,
        default_type=delivered.routing_key or props.message_type,
        content_type=props.content_type,
        message_id=props.message_id or None,
    )


def best_effort(delivered: DeliveredMessage) -> Message:
    """A message for one that :func:`read` refused: the raw body, the routing key as
    type where it is one (else ``herald.undecodable``), the plain headers (without
    the CloudEvents ones, which did not decode) and a stable id."""
    props = delivered.header.properties
    headers = {
        str(name): header_text(value)
        for name, value in (props.headers or {}).items()
        if not _transport(str(name)) and not str(name).startswith(CE_PREFIXES)
    }
    key = delivered.routing_key or ""
    kind = key if is_event_type(key) else UNDECODABLE_TYPE
    message_id = props.message_id
    if not message_id or len(message_id) > MAX_ATTRIBUTE:
        message_id = content_id(kind, headers, delivered.body)
    try:
        return Message(type=kind, body=delivered.body, id=message_id, headers=headers)
    except (TypeError, ValueError):
        return Message(type=UNDECODABLE_TYPE, body=delivered.body, id=message_id)


def attempt_header(headers: Mapping[str, Any]) -> int:
    """The ``herald-attempt`` header (1 when absent); :class:`herald.HeaderError`
    for anything but a whole number from 1 to :data:`herald.headers.MAX_ATTEMPT`."""
    value = headers.get(ATTEMPT)
    return 1 if value is None else attempt_from(_number_text(ATTEMPT, value))


def delivery_count(headers: Mapping[str, Any]) -> int:
    """RabbitMQ's ``x-delivery-count`` (quorum queues): 0 when absent."""
    value = headers.get(DELIVERY_COUNT)
    if value is None:
        return 0
    text = _number_text(DELIVERY_COUNT, value)
    if len(text) <= 7 and text.isascii() and text.isdigit() and int(text) <= MAX_ATTEMPT:
        return int(text)
    raise HeaderError(f"header {DELIVERY_COUNT}: {text[:64]!r} is not a delivery count")


def attempt_of(attempt: int, *, redelivered: bool, count: int | None, released: int) -> int:
    """The attempt a delivery is: ``attempt`` (from the header) plus the redeliveries
    the broker counted (``count``, quorum queues) or, without a count, one if it was
    redelivered; less the ``released`` redeliveries that were no attempt."""
    if count is not None:
        attempt += max(0, count - released)
    elif redelivered and not released:
        attempt += 1
    return min(attempt, MAX_ATTEMPT)


def header_text(value: object) -> str:
    """An AMQP field value as the string a Herald header holds."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode(errors="replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _number_text(name: str, value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("ascii", errors="replace")
    raise HeaderError(f"header {name}: a {type(value).__name__}, not a whole number")


def _transport(name: str) -> bool:
    return name in _TRANSPORT_HEADERS or name.startswith(_TRANSPORT_PREFIXES)
