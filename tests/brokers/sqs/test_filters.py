"""Filter policies against Herald's own topic matching.

A small evaluator of SNS filter policies (exact, prefix, suffix, numeric equality
and lower bound, ``$or``) checks what each policy lets through: exactly what the
patterns match when :func:`exact` says so, and never less otherwise.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from herald.brokers.sqs.filters import exact, policy
from herald.brokers.sqs.wire import TYPE, WORDS
from herald.topic import matches

WORD = st.sampled_from(["a", "b", "c"])
TYPES = st.lists(WORD, min_size=1, max_size=5).map(".".join)
PATTERNS = st.lists(st.sampled_from(["a", "b", "*", "#"]), min_size=1, max_size=4).map(".".join)


def lets_through(found: dict[str, Any] | None, event_type: str) -> bool:
    if found is None:
        return True
    if "$or" in found:
        return any(lets_through(alternative, event_type) for alternative in found["$or"])
    values = {TYPE: event_type, WORDS: event_type.count(".") + 1}
    return all(any(_match(rule, values[key]) for rule in rules) for key, rules in found.items())


def _match(rule: Any, value: Any) -> bool:
    if isinstance(rule, str):
        return bool(rule == value)
    if "prefix" in rule:
        return str(value).startswith(str(rule["prefix"]))
    if "suffix" in rule:
        return str(value).endswith(str(rule["suffix"]))
    operator, number = rule["numeric"]
    return bool(value == number if operator == "=" else value >= number)


@given(st.lists(PATTERNS, min_size=1, max_size=3), TYPES)
def test_policy_lets_through_what_the_patterns_match(patterns: list[str], event_type: str) -> None:
    wanted = any(matches(p, event_type) for p in patterns)
    through = lets_through(policy(patterns), event_type)
    if exact(patterns):
        assert through == wanted, (patterns, event_type, policy(patterns))
    else:
        assert through or not wanted, (patterns, event_type, policy(patterns))


def test_single_word_wildcards_are_exact_with_the_word_count() -> None:
    assert exact(["employee.*", "*.created", "employee.#", "#"])
    assert not exact(["a.*.c"]) and not exact(["a.#.c"]) and not exact(["*.b.*"])
