"""Herald messages as AMQP 0-9-1 properties and headers, and back.

Attributes go into ``cloudEvents_*`` headers (see :mod:`herald.wire`); the content
type also into ``content_type``, the id into ``message_id``, the type into ``type``
and the time into ``timestamp``. Messages are persistent (``delivery_mode`` 2).
Which attempt a delivery is travels in the ``herald-attempt`` header; redeliveries
the broker made are added (``x-delivery-count`` on quorum queues, else one for the
``redelivered`` flag) except those this process caused by releasing the message.
A ``reply_to`` property naming a direct reply-to channel (RabbitMQ fills it in as
``amq.rabbitmq.reply-to.<token>``) becomes the ``herald-reply-to`` header.

>>> m = Message(type="employee.created", body=b"{}", id="m1")
>>> p = properties_for(m, attempt=2)
>>> p.message_id, p.content_type, p.delivery_mode, p.headers["herald-attempt"]
('m1', 'application/json', 2, 2)
>>> attempt_of({"herald-attempt": 2, "x-delivery-count": 1}, redelivered=True)
3
>>> attempt_of({}, redelivered=True)
2
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from ..message import Message
from ..wire import decode_message, encode_headers

__all__ = [
    "ATTEMPT_HEADER",
    "attempt_of",
    "decode_delivered",
    "forget_release",
    "header_text",
    "note_release",
    "properties_for",
]

ATTEMPT_HEADER = "herald-attempt"
REPLY_TO_HEADER = "herald-reply-to"
_DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
_TRANSPORT_HEADERS = frozenset({ATTEMPT_HEADER, "x-delivery-count", "x-death"})
_TRANSPORT_PREFIXES = ("x-first-death-", "x-last-death-")
_RELEASED: OrderedDict[tuple[str, str], int] = OrderedDict()
_RELEASED_LIMIT = 100_000


def note_release(queue: str, message_id: str) -> None:
    """Remember that this process gave ``message_id`` back to ``queue`` unhandled."""
    key = (queue, message_id)
    _RELEASED[key] = _RELEASED.pop(key, 0) + 1
    if len(_RELEASED) > _RELEASED_LIMIT:
        _RELEASED.popitem(last=False)


def forget_release(queue: str, message_id: str) -> None:
    """The message was settled for good: no redelivery to excuse any more."""
    if _RELEASED:
        _RELEASED.pop((queue, message_id), None)


def properties_for(message: Message, attempt: int = 1) -> spec.Basic.Properties:
    headers: dict[str, Any] = encode_headers(message)
    if attempt > 1:
        headers[ATTEMPT_HEADER] = attempt
    return spec.Basic.Properties(
        content_type=message.datacontenttype,
        delivery_mode=2,
        message_id=message.id,
        timestamp=message.time,
        message_type=message.type,
        headers=headers,
    )


def attempt_of(headers: Mapping[str, Any], *, redelivered: bool, released: int = 0) -> int:
    """1 for a first delivery, plus retries, plus redeliveries the broker counted
    (``x-delivery-count``, quorum queues) or, without a count, one if redelivered;
    minus the ``released`` redeliveries that were no attempt."""
    attempt = _int(headers.get(ATTEMPT_HEADER), 1)
    count = headers.get("x-delivery-count")
    if count is not None:
        return attempt + max(0, _int(count, 0) - released)
    return attempt + 1 if redelivered and not released else attempt


def decode_delivered(delivered: DeliveredMessage, queue: str = "") -> tuple[Message, int]:
    """The message and its attempt number; raises DecodeError for bad attributes."""
    props = delivered.header.properties
    raw = props.headers or {}
    headers = {
        name: header_text(value)
        for name, value in raw.items()
        if name not in _TRANSPORT_HEADERS and not name.startswith(_TRANSPORT_PREFIXES)
    }
    if props.reply_to and props.reply_to.startswith(_DIRECT_REPLY_TO):
        headers[REPLY_TO_HEADER] = props.reply_to
    delivery = delivered.delivery
    redelivered = bool(getattr(delivery, "redelivered", False))
    message = decode_message(
        headers,
        delivered.body,
        default_type=delivered.routing_key or props.message_type,
        content_type=props.content_type,
        message_id=props.message_id,
    )
    released = 0
    if redelivered and _RELEASED:
        key = (queue, message.id)
        released = _RELEASED.get(key, 0)
        if released and "x-delivery-count" not in raw:
            _use_excuse(key)
    return message, attempt_of(raw, redelivered=redelivered, released=released)


def _use_excuse(key: tuple[str, str]) -> None:
    """A ``redelivered`` flag says nothing of how often: each release excuses one."""
    left = _RELEASED.pop(key) - 1
    if left > 0:
        _RELEASED[key] = left


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


def _int(value: object, default: int) -> int:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not isinstance(value, int | str):
        return default
    try:
        return int(value)
    except ValueError:
        return default
