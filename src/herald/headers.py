"""The headers the runtime itself writes and reads, and how it reads them.

Any publisher can set any header, so each one the runtime acts on is parsed here,
strictly and within bounds; a malformed one raises :class:`herald.HeaderError`, which
dead-letters the delivery with the header's name in the reason. Nothing read from a
header can make a service spin, stall, or publish where it did not mean to.

>>> attempt_from("3")
3
>>> attempt_from("-1000000000")
Traceback (most recent call last):
...
herald.errors.HeaderError: header herald-attempt: '-1000000000' is not an attempt number (1-1000000)
>>> time_from(FIRST_FAILURE, "yesterday")
Traceback (most recent call last):
...
herald.errors.HeaderError: header herald-first-failure: 'yesterday' is not an RFC 3339 timestamp
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from .errors import HeaderError

__all__ = [
    "ATTEMPT",
    "CAUSATION_ID",
    "CORRELATION_ID",
    "DEADLINE",
    "FIRST_FAILURE",
    "LAST_ERROR",
    "MAX_ATTEMPT",
    "REPLY_STATUS",
    "REPLY_TO",
    "attempt_from",
    "deadline_from",
    "first_failure_of",
    "time_from",
]

ATTEMPT = "herald-attempt"
"""The attempt number, on brokers that carry it in the message (AMQP)."""
FIRST_FAILURE = "herald-first-failure"
LAST_ERROR = "herald-last-error"
"""Added by the runtime to a message it retries."""
CAUSATION_ID = "herald-causation-id"
"""The id of the message a handler was handling when it published this one."""
REPLY_TO = "herald-reply-to"
CORRELATION_ID = "herald-correlation-id"
DEADLINE = "herald-deadline"
REPLY_STATUS = "herald-rpc-status"
"""Request/reply: where to answer, which call it answers, when the caller gives up."""

MAX_ATTEMPT = 1_000_000
_MAX_TEXT = 64


def attempt_from(text: str) -> int:
    """An attempt number from a header: a decimal integer from 1 to :data:`MAX_ATTEMPT`."""
    if len(text) <= _MAX_TEXT and text.isascii() and text.isdigit():
        value = int(text)
        if 1 <= value <= MAX_ATTEMPT:
            return value
    raise HeaderError(
        f"header {ATTEMPT}: {text[:_MAX_TEXT]!r} is not an attempt number (1-{MAX_ATTEMPT})"
    )


def time_from(name: str, text: str) -> datetime:
    """An RFC 3339 timestamp from header ``name`` (naive values are taken as UTC)."""
    try:
        if len(text) > _MAX_TEXT:
            raise ValueError(text)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise HeaderError(
            f"header {name}: {text[:_MAX_TEXT]!r} is not an RFC 3339 timestamp"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def first_failure_of(headers: Mapping[str, str]) -> datetime | None:
    """When the message first failed, if a retry recorded it."""
    text = headers.get(FIRST_FAILURE)
    return None if text is None else time_from(FIRST_FAILURE, text)


def deadline_from(text: str) -> float:
    """A request deadline: Unix seconds, finite and positive."""
    try:
        if len(text) > _MAX_TEXT:
            raise ValueError(text)
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1e11:
        raise HeaderError(f"header {DEADLINE}: {text[:_MAX_TEXT]!r} is not a Unix time")
    return value
