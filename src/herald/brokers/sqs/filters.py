"""Topic patterns as SNS subscription filter policies.

Every message carries its type in ``cloudEvents_type`` and its number of words in
``herald-words``; a queue's subscription lets through the types its patterns match.
SNS matches a value exactly, by prefix or by suffix (one of them per alternative),
and numbers by comparison, so a pattern is matched exactly by SNS when its literal
words are all before its wildcards or all after them:

>>> policy(["employee.created"])
{'cloudEvents_type': ['employee.created']}
>>> policy(["employee.#", "#.deleted"])
{'cloudEvents_type': ['deleted', {'suffix': '.deleted'}, 'employee', {'prefix': 'employee.'}]}
>>> policy(["employee.*"])
{'cloudEvents_type': [{'prefix': 'employee.'}], 'herald-words': [{'numeric': ['=', 2]}]}
>>> policy(["a.b", "*.*"])["$or"][0]
{'herald-words': [{'numeric': ['=', 2]}]}
>>> policy(["#"]) is None
True

A pattern with literal words on both sides of a wildcard (``a.*.c``, ``a.#.c``) is
let through by a wider filter (here: prefix ``a.`` and the word count), and the
consumer drops what the pattern does not match (:func:`exact`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .wire import TYPE, WORDS

__all__ = ["exact", "policy"]

Condition = dict[str, list[Any]]


def policy(patterns: Iterable[str]) -> dict[str, Any] | None:
    """The filter policy letting through what ``patterns`` match (None: everything)."""
    conditions = []
    for pattern in sorted(set(patterns)):
        condition = _condition(pattern)
        if condition is None:
            return None
        conditions.append(condition)
    if all(set(c) == {TYPE} for c in conditions):
        values: list[Any] = []
        for condition in conditions:
            values += [v for v in condition[TYPE] if v not in values]
        return {TYPE: values}
    return conditions[0] if len(conditions) == 1 else {"$or": conditions}


def exact(patterns: Iterable[str]) -> bool:
    """Whether SNS alone matches ``patterns`` exactly (else the consumer checks)."""
    return all(_exact(pattern) for pattern in patterns)


def _split(pattern: str) -> tuple[list[str], list[str], list[str]]:
    """Literal words before the first wildcard, from it to the last, and after it."""
    words = pattern.split(".")
    wild = [i for i, word in enumerate(words) if word in ("*", "#")]
    if not wild:
        return words, [], []
    return words[: wild[0]], words[wild[0] : wild[-1] + 1], words[wild[-1] + 1 :]


def _exact(pattern: str) -> bool:
    head, middle, tail = _split(pattern)
    literal_middle = any(word not in ("*", "#") for word in middle)
    return not middle or not (literal_middle or (head and tail))


def _condition(pattern: str) -> Condition | None:
    head, middle, tail = _split(pattern)
    if not middle:
        return {TYPE: [pattern]}
    words = pattern.split(".")
    fixed = "#" not in words
    least = sum(1 for word in words if word != "#")
    may_vanish = all(word == "#" for word in middle)
    condition: Condition = {}
    if head:
        literal = ".".join(head)
        condition[TYPE] = [{"prefix": f"{literal}."}]
        if may_vanish and not tail:
            condition[TYPE].insert(0, literal)
    elif tail:
        literal = ".".join(tail)
        condition[TYPE] = [{"suffix": f".{literal}"}]
        if may_vanish:
            condition[TYPE].insert(0, literal)
    if fixed:
        condition[WORDS] = [{"numeric": ["=", len(words)]}]
    elif least > len(head) + len(tail) or (head and tail):
        condition[WORDS] = [{"numeric": [">=", least]}]
    return condition or None
