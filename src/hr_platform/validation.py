"""Rules an employee record must follow; a broken rule is a ``herald.Invalid`` naming the field.

>>> clean_employee({"first_name": " Ada ", "last_name": "Lovelace",
...                 "email": "ada@example.com", "salary": "52000"})["salary"]
Decimal('52000.00')
>>> try:
...     clean_employee({"first_name": "", "last_name": "L", "email": "x", "salary": "-1"})
... except herald.Invalid as exc:
...     sorted(exc.fields)
['email', 'first_name', 'salary']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import herald

__all__ = ["MAX_NAME", "MAX_SALARY", "clean_employee"]

MAX_NAME = 100
MAX_TITLE = 100
MAX_EMAIL = 254
MAX_SALARY = Decimal("100000000")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def _name(value: str, label: str) -> str | tuple[None, str]:
    text = value.strip()
    if not text:
        return None, f"{label} is required"
    if len(text) > MAX_NAME:
        return None, f"{label} is too long (at most {MAX_NAME} characters)"
    return text


def _email(value: str) -> str | tuple[None, str]:
    text = value.strip()
    if not text:
        return None, "email is required"
    if len(text) > MAX_EMAIL or not EMAIL.match(text):
        return None, "email is not a valid email address"
    return text.lower()


def _salary(value: str) -> Decimal | tuple[None, str]:
    text = value.strip().replace(",", "").replace("_", "")
    if not text:
        return None, "salary is required"
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None, "salary must be a number, e.g. 52000 or 52000.50"
    if not amount.is_finite() or amount <= 0:
        return None, "salary must be a positive amount"
    if amount >= MAX_SALARY:
        return None, "salary is too large"
    if amount != amount.quantize(Decimal("0.01")):
        return None, "salary has at most 2 decimal places"
    return amount.quantize(Decimal("0.01"))


def _title(value: str) -> str | tuple[None, str]:
    text = value.strip()
    if len(text) > MAX_TITLE:
        return None, f"title is too long (at most {MAX_TITLE} characters)"
    return text


_RULES: dict[str, Callable[[str], object]] = {
    "first_name": lambda v: _name(v, "first name"),
    "last_name": lambda v: _name(v, "last name"),
    "email": _email,
    "salary": _salary,
    "title": _title,
}


def clean_employee(data: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """The validated, normalised fields of ``data``; with ``partial`` only those given
    (not ``None``). Raises ``herald.Invalid`` listing every field that is wrong."""
    cleaned: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field, rule in _RULES.items():
        raw = data.get(field)
        if raw is None:
            if partial:
                continue
            raw = ""
        result = rule(str(raw))
        if isinstance(result, tuple):
            errors[field] = result[1]
        else:
            cleaned[field] = result
    if errors:
        summary = "; ".join(errors.values())
        raise herald.Invalid(f"employee is invalid: {summary}", fields=errors)
    return cleaned
