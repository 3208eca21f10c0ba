"""AMQP-style topic patterns: ``*`` matches one word, ``#`` matches zero or more."""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["is_pattern", "matches", "validate_pattern"]

_WORD = re.compile(r"^[A-Za-z0-9_\-]+$")


def is_pattern(text: str) -> bool:
    """True when ``text`` contains a wildcard word."""
    return any(word in ("*", "#") for word in text.split("."))


def validate_pattern(text: str) -> str:
    """Return ``text`` if it is a valid event type or pattern, else raise ValueError.

    >>> validate_pattern("employee.*")
    'employee.*'
    """
    if not text:
        raise ValueError("an event type or pattern must not be empty")
    for word in text.split("."):
        if word in ("*", "#"):
            continue
        if not _WORD.match(word):
            raise ValueError(
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
    return _match_words(tuple(pattern.split(".")), tuple(event_type.split(".")))


def _match_words(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match_words(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    if head == "*" or head == words[0]:
        return _match_words(rest, words[1:])
    return False
