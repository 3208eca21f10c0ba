"""Dead letters grouped by failure (:func:`herald.deadletter.fingerprint`: the error
type and the shape of its message), and the edit-and-replay of one.

>>> from herald.deadletter import DeadLetter, DeadLetterReason
>>> from herald.message import Message
>>> def letter(error: str) -> DeadLetter:
...     reason = DeadLetterReason("payroll.a", "TimeoutError", error, 3)
...     return DeadLetter(Message(type="a", body=b"{}"), reason)
>>> [(g.count, g.shape) for g in group("payroll", [letter("x 1"), letter("x 2")])]
[(2, 'TimeoutError: x <n>')]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime

from ..bus import Bus
from ..deadletter import DeadLetter, fingerprint
from ..message import Message

__all__ = ["Group", "group", "parse_headers", "pretty_body", "replay_edited"]


@dataclass
class Group:
    """Dead letters of one service with one fingerprint."""

    service: str
    shape: str
    letters: list[DeadLetter] = field(default_factory=list)

    @property
    def key(self) -> str:
        """A short stable id of the group, for URLs and forms."""
        return hashlib.sha1(f"{self.service}\0{self.shape}".encode()).hexdigest()[:12]

    @property
    def count(self) -> int:
        return len(self.letters)

    @property
    def ids(self) -> list[str]:
        return [letter.message.id for letter in self.letters]

    @property
    def first_seen(self) -> datetime | None:
        times = [t for t in (x.reason.first_failure for x in self.letters) if t is not None]
        return min(times) if times else None

    @property
    def last_seen(self) -> datetime | None:
        times = [t for t in (x.reason.last_failure for x in self.letters) if t is not None]
        return max(times) if times else None


def group(service: str, letters: list[DeadLetter]) -> list[Group]:
    """``letters`` grouped by fingerprint, largest group first."""
    groups: dict[str, Group] = {}
    for letter in letters:
        shape = fingerprint(letter)
        groups.setdefault(shape, Group(service, shape)).letters.append(letter)
    return sorted(groups.values(), key=lambda g: (-g.count, g.shape))


def pretty_body(body: bytes) -> tuple[str, str]:
    """(kind, text) of a body for display: ``json`` indented, ``text``, or ``bytes``
    as hex when it is not UTF-8."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return "bytes", body[:4096].hex(" ")
    try:
        return "json", json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return "text", text


def parse_headers(text: str) -> dict[str, str]:
    """Headers edited as a JSON object of strings; ``ValueError`` naming the problem.

    >>> parse_headers('{"x-fixed": "yes"}')
    {'x-fixed': 'yes'}
    >>> parse_headers('["x"]')
    Traceback (most recent call last):
    ValueError: headers must be a JSON object of text values, e.g. {"x-fixed": "yes"}
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"headers are not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError('headers must be a JSON object of text values, e.g. {"x-fixed": "yes"}')
    return data


async def replay_edited(
    bus: Bus, service: str, message_id: str, body: bytes, headers: dict[str, str]
) -> Message:
    """Replay dead letter ``message_id`` of ``service`` with a new body and headers, to
    the queue it came from, as a first attempt; the body is checked as input (see
    :meth:`herald.Bus.replay_edited_dead_letter`)."""
    return await bus.replay_edited_dead_letter(service, message_id, body, headers)
