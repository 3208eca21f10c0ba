"""Dead letters: a message that could not be handled, with why, where and when."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from .errors import HeaderError
from .headers import ATTEMPT, FIRST_FAILURE, LAST_ERROR, time_from
from .message import Message

__all__ = [
    "FIRST_FAILURE",
    "LAST_ERROR",
    "PREFIX",
    "DeadLetter",
    "DeadLetterReason",
    "fingerprint",
]

PREFIX = "herald-dl-"
"""Headers a dead letter carries, next to the original message's own."""
_RETRY_HEADERS = frozenset((ATTEMPT, FIRST_FAILURE, LAST_ERROR))


@dataclass(frozen=True, slots=True)
class DeadLetterReason:
    """Why a delivery was dead-lettered.

    >>> when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    >>> r = DeadLetterReason("payroll.employee.created", "KeyError", "'salary'", 5, when, when)
    >>> DeadLetterReason.from_headers(r.to_headers()) == r
    True
    """

    queue: str
    error_type: str
    error_message: str
    attempts: int
    first_failure: datetime | None = None
    last_failure: datetime | None = None

    def to_headers(self) -> dict[str, str]:
        last = self.last_failure or datetime.now(UTC)
        return {
            f"{PREFIX}queue": self.queue,
            f"{PREFIX}error-type": self.error_type,
            f"{PREFIX}error": self.error_message[:4000],
            f"{PREFIX}attempts": str(self.attempts),
            f"{PREFIX}first-failure": (self.first_failure or last).isoformat(),
            f"{PREFIX}last-failure": last.isoformat(),
        }

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> DeadLetterReason:
        """The reason stored in a dead letter's headers; a part that does not parse
        (anyone can publish into a dead-letter queue) is left empty, never raised."""
        attempts = headers.get(f"{PREFIX}attempts", "0")
        return cls(
            queue=headers.get(f"{PREFIX}queue", ""),
            error_type=headers.get(f"{PREFIX}error-type", ""),
            error_message=headers.get(f"{PREFIX}error", ""),
            attempts=int(attempts) if _is_count(attempts) else 0,
            first_failure=_lenient_time(headers, f"{PREFIX}first-failure"),
            last_failure=_lenient_time(headers, f"{PREFIX}last-failure"),
        )

    def __str__(self) -> str:
        return f"{self.error_type}: {self.error_message} (after {self.attempts} attempt(s))"


def _is_count(text: str) -> bool:
    return len(text) <= 9 and text.isascii() and text.isdigit()


def _lenient_time(headers: Mapping[str, str], name: str) -> datetime | None:
    text = headers.get(name)
    if not text:
        return None
    try:
        return time_from(name, text)
    except HeaderError:
        return None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-lettered message: the original (without dead-letter headers) and the reason."""

    message: Message
    reason: DeadLetterReason

    @classmethod
    def from_stored(cls, stored: Message) -> DeadLetter:
        """Split a message stored in a dead-letter queue into original and reason."""
        return cls(stored.without_headers(PREFIX), DeadLetterReason.from_headers(stored.headers))

    def to_stored(self) -> Message:
        return self.message.with_headers(self.reason.to_headers())

    def for_replay(self) -> Message:
        """The original message as a fresh first attempt (retry bookkeeping removed)."""
        headers = {k: v for k, v in self.message.headers.items() if k not in _RETRY_HEADERS}
        return replace(self.message, headers=headers)

    def edited(self, body: bytes, headers: Mapping[str, str] | None = None) -> Message:
        """The original message with a new ``body`` (and, if given, ``headers`` in place
        of all its own) as a fresh first attempt: same id, type, key and time; retry
        bookkeeping and dead-letter headers are dropped. Headers must be text.

        >>> letter = DeadLetter(Message(type="t", body=b"{}", headers={"herald-attempt": "3"}),
        ...                     DeadLetterReason("s.t", "ValueError", "bad", 3))
        >>> fixed = letter.edited(b'{"n": 1}', {"x-fixed": "yes", "herald-dl-queue": "s.t"})
        >>> fixed.body, dict(fixed.headers), fixed.id == letter.message.id
        (b'{"n": 1}', {'x-fixed': 'yes'}, True)
        """
        chosen = self.message.headers if headers is None else headers
        for name, value in chosen.items():
            if not isinstance(name, str) or not name or not isinstance(value, str):
                raise HeaderError(f"header {name!r}: names and values must be (non-empty) text")
        kept = {
            k: v for k, v in chosen.items() if k not in _RETRY_HEADERS and not k.startswith(PREFIX)
        }
        return replace(self.message, body=bytes(body), headers=kept)


_SHAPES = (
    (re.compile(r"""(?<!\w)(?:'[^'\n]*'|"[^"\n]*")(?!\w)"""), "<str>"),
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<uuid>",
    ),
    (
        re.compile(r"\b\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?)?"),
        "<time>",
    ),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<email>"),
    (re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[a-z])[\w-]{8,}\b", re.I), "<id>"),
    (re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.I), "<n>"),
)
_FINGERPRINT_LENGTH = 500


def fingerprint(dead_letter: DeadLetter) -> str:
    """What dead letters failing the same way share: the exception type and the shape
    of its message, with quoted values, uuids, times, e-mail addresses, ids and numbers
    replaced by placeholders (whitespace collapsed, at most 500 characters).

    >>> def letter(error_type: str, error: str) -> DeadLetter:
    ...     reason = DeadLetterReason("payroll.employee.created", error_type, error, 3)
    ...     return DeadLetter(Message(type="employee.created", body=b"{}"), reason)
    >>> fingerprint(letter("KeyError", "'salary'"))
    'KeyError: <str>'
    >>> fingerprint(letter("ValueError", "employee 42 (3f2c9a1e-1b2d-4c5e-8f90-123456789abc)"
    ...                                  " on 2026-01-02T03:04:05Z: salary -3.5"))
    'ValueError: employee <n> (<uuid>) on <time>: salary <n>'
    >>> fingerprint(letter("Reject", "tick 5 is not wanted"))
    'Reject: tick <n> is not wanted'

    """
    shape = dead_letter.reason.error_message
    for pattern, placeholder in _SHAPES:
        shape = pattern.sub(placeholder, shape)
    error_type = " ".join(dead_letter.reason.error_type.split()) or "?"
    return f"{error_type}: {' '.join(shape.split())}"[:_FINGERPRINT_LENGTH]
