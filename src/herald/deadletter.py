"""Dead letters: a message that could not be handled, with why, where and when."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from .errors import HeaderError
from .headers import ATTEMPT, FIRST_FAILURE, LAST_ERROR, time_from
from .message import Message

__all__ = ["FIRST_FAILURE", "LAST_ERROR", "PREFIX", "DeadLetter", "DeadLetterReason"]

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
