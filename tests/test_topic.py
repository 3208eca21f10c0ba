from __future__ import annotations

import pytest

from herald.topic import is_pattern, matches, validate_pattern


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("employee.created", "employee.created", True),
        ("employee.created", "employee.updated", False),
        ("employee.*", "employee.created", True),
        ("employee.*", "employee", False),
        ("employee.*", "employee.created.v2", False),
        ("*.created", "employee.created", True),
        ("employee.#", "employee", True),
        ("employee.#", "employee.a.b.c", True),
        ("#", "x", True),
        ("#.created", "a.b.created", True),
        ("#.created", "created", True),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.b.c", False),
    ],
)
def test_amqp_topic_semantics(pattern: str, event_type: str, expected: bool) -> None:
    assert matches(pattern, event_type) is expected


def test_validation_names_the_bad_word() -> None:
    with pytest.raises(ValueError, match="word 'bad word'"):
        validate_pattern("employee.bad word")
    with pytest.raises(ValueError, match="must not be empty"):
        validate_pattern("")
    assert is_pattern("a.*") and is_pattern("#") and not is_pattern("a.b")
