"""Scheduled messages on the wire: the due time, and Herald's scheduler envelope.

A message to deliver later carries its due time in the header ``herald-not-before``
(RFC 3339, UTC). :meth:`herald.Broker.publish` hands such messages to the adapter's
``_publish_later``: a broker that can hold a message until a time does so itself
(``Features.native_schedule``); on the others the message travels, until it is due,
as a ``herald.scheduled`` envelope in Herald's scheduler queue, where
:class:`herald.scheduler.Scheduler` keeps it (waiting through the broker's own
delayed retry) and publishes the original at its due time.

>>> from herald.message import Message
>>> m = Message(type="card.topped-up", body=b"{}", headers={NOT_BEFORE: "2030-01-02T03:04:05Z"})
>>> due_of(m)
1893553445.0
>>> envelope = wrap(m)
>>> envelope.type, envelope.headers[ORIGINAL_TYPE], envelope.id == m.id
('herald.scheduled', 'card.topped-up', False)
>>> unwrap(envelope) == m
True
>>> from datetime import timezone
>>> not_before(datetime(2030, 1, 2, 12, 0, tzinfo=timezone(timedelta(hours=2))))
datetime.datetime(2030, 1, 2, 10, 0, tzinfo=datetime.timezone.utc)
>>> not_before(datetime(2030, 1, 2, 3, 4, 5))
Traceback (most recent call last):
...
ValueError: a scheduled time must be time-zone aware (naive datetime 2030-01-02 03:04:05)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from .errors import HeaderError
from .headers import time_from
from .message import Message
from .topic import validate_pattern

__all__ = [
    "NOT_BEFORE",
    "ORIGINAL_ID",
    "ORIGINAL_TYPE",
    "SCHEDULED_TYPE",
    "SCHEDULER_QUEUE",
    "SCHEDULER_SERVICE",
    "due_headers",
    "due_of",
    "not_before",
    "unwrap",
    "wrap",
]

NOT_BEFORE = "herald-not-before"
"""The time before which a message is not delivered (RFC 3339, UTC)."""
ORIGINAL_TYPE = "herald-scheduled-type"
ORIGINAL_ID = "herald-scheduled-id"
"""In a scheduler envelope: the type and id of the message it carries (the envelope
has an id of its own: brokers that drop a second publish of an id, as JetStream
does, must not take the message for the envelope again)."""
SCHEDULED_TYPE = "herald.scheduled"
SCHEDULER_SERVICE = "herald"
"""The service name of the scheduler queue (``herald.scheduled``) and its dead letters."""
SCHEDULER_QUEUE = f"{SCHEDULER_SERVICE}.scheduled"


def not_before(
    at: datetime | None = None, delay: timedelta | float | None = None
) -> datetime | None:
    """The due time ``at`` or ``delay`` from now names (None: at once). ``at`` must be
    time-zone aware; giving both is an error."""
    if at is not None and delay is not None:
        raise ValueError("give at= or delay=, not both")
    if at is not None:
        if not isinstance(at, datetime):
            raise TypeError(f"at= takes a datetime, not {type(at).__name__}")
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"a scheduled time must be time-zone aware (naive datetime {at})")
        return at.astimezone(UTC)
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if not math.isfinite(seconds):
            raise ValueError(f"delay= must be a finite number of seconds, not {seconds}")
        return datetime.now(UTC) + timedelta(seconds=max(0.0, seconds))
    return None


def due_headers(
    headers: Mapping[str, str] | None, at: datetime | None, delay: timedelta | float | None
) -> Mapping[str, str] | None:
    """``headers`` with the due time ``at``/``delay`` name (:func:`not_before`)."""
    due = not_before(at, delay)
    if due is None:
        return headers
    return {**(headers or {}), NOT_BEFORE: due.isoformat()}


def due_of(message: Message) -> float | None:
    """When ``message`` is due (Unix seconds), or None if it carries no due time; a
    malformed ``herald-not-before`` raises :class:`herald.HeaderError`."""
    text = message.headers.get(NOT_BEFORE)
    return None if text is None else time_from(NOT_BEFORE, text).timestamp()


def wrap(message: Message) -> Message:
    """The envelope that carries ``message`` in the scheduler queue until it is due."""
    return replace(
        message,
        id=hashlib.sha256(f"scheduled:{message.id}".encode()).hexdigest()[:32],
        type=SCHEDULED_TYPE,
        headers={**message.headers, ORIGINAL_TYPE: message.type, ORIGINAL_ID: message.id},
    )


def unwrap(envelope: Message) -> Message:
    """The message a scheduler envelope carries; :class:`herald.HeaderError` when the
    envelope names no valid event type."""
    original = envelope.headers.get(ORIGINAL_TYPE, "")
    try:
        validate_pattern(original)
    except ValueError:
        raise HeaderError(f"header {ORIGINAL_TYPE}: {original[:100]!r} is no event type") from None
    if "*" in original or "#" in original:
        raise HeaderError(f"header {ORIGINAL_TYPE}: {original[:100]!r} is a pattern")
    original_id = envelope.headers.get(ORIGINAL_ID, "")
    if not original_id or len(original_id) > 256 or not original_id.isprintable():
        raise HeaderError(f"header {ORIGINAL_ID}: {original_id[:100]!r} is no message id")
    headers = {k: v for k, v in envelope.headers.items() if k not in (ORIGINAL_TYPE, ORIGINAL_ID)}
    return replace(envelope, id=original_id, type=original, headers=headers)
