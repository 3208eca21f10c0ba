"""AMQP-style topic patterns: ``*`` matches one word, ``#`` matches zero or more.

Event types and patterns are dot-separated words of letters, digits, ``_`` and ``-``;
an invalid one raises :class:`herald.errors.PatternError` (a ``ValueError`` too).
Matching takes time proportional to pattern words times type words, whatever the
input: a pattern of many ``#`` cannot make it blow up.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .errors import PatternError

__all__ = ["MAX_LENGTH", "is_pattern", "matches", "validate_pattern"]

_WORD = re.compile(r"[A-Za-z0-9_\-]+")
MAX_LENGTH = 255
"""Longest event type or pattern (AMQP's routing key limit)."""


def is_pattern(text: str) -> bool:
    """True when ``text`` contains a wildcard word."""
    return any(word in ("*", "#") for word in text.split("."))


def validate_pattern(text: str) -> str:
    """Return ``text`` if it is a valid event type or pattern, else raise PatternError.

    >>> validate_pattern("employee.*")
    'employee.*'
    """
    if not text:
        raise PatternError("an event type or pattern must not be empty")
    if len(text) > MAX_LENGTH:
        raise PatternError(
            f"event type or pattern {text[:40]!r}... is {len(text)} characters; "
            f"at most {MAX_LENGTH}"
        )
    for word in text.split("."):
        if word in ("*", "#"):
            continue
        if not _WORD.fullmatch(word):
            raise PatternError(
                f"invalid event type or pattern {text!r}: word {word!r} must be letters, "
                "digits, '_' or '-', or a wildcard '*' / '#'"
            )
    return text


@lru_cache(maxsize=65536)
def matches(pattern: str, event_type: str) -> bool:
    """Whether ``event_type`` is routed by the topic ``pattern``.

    >>> matches("employee.*", "employee.created")
    True
    >>> matches("employee.*", "employee.created.v2")
    False
    >>> matches("#", "anything.at.all"), matches("employee.#", "employee")
    (True, True)
    """
    if "*" not in pattern and "#" not in pattern:
        return pattern == event_type
    words = event_type.split(".")
    # reachable[j]: the pattern words seen so far can match exactly words[:j]
    reachable = [True] + [False] * len(words)
    for head in pattern.split("."):
        if head == "#":
            for j in range(1, len(words) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            for j in range(len(words), 0, -1):
                reachable[j] = reachable[j - 1] and (head == "*" or head == words[j - 1])
            reachable[0] = False
    return reachable[-1]
