"""What the HR platform's services say to each other: events, requests and replies.

Events (published by ``employees`` through its outbox, keyed by the employee's guid)
carry the whole employee as it is after the change, plus a ``version`` that grows
with every change, so a subscriber never needs to call back. Requests follow the
Active Remote conventions of the Ruby platform: search by attributes returns a list,
get by guid, create and update return the record, delete returns what was deleted.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Self

from pydantic import BaseModel

import herald

__all__ = [
    "CreateEmployee",
    "DeleteEmployee",
    "EmployeeChanged",
    "EmployeeCreated",
    "EmployeeDeleted",
    "EmployeeList",
    "EmployeeRecord",
    "EmployeeUpdated",
    "GetEmployee",
    "SearchEmployees",
    "UpdateEmployee",
]


class EmployeeRecord(BaseModel):
    """An employee as the employees service stores it."""

    guid: str
    first_name: str
    last_name: str
    email: str
    salary: Decimal
    title: str = ""
    version: int = 1
    created_at: datetime
    updated_at: datetime

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


class EmployeeList(BaseModel):
    """The answer to a search: matching records, oldest first, and how many match."""

    records: list[EmployeeRecord]
    total: int


class EmployeeChanged(herald.Event):
    """Fields every ``employee.*`` event carries."""

    guid: str
    first_name: str
    last_name: str
    email: str
    salary: Decimal
    title: str = ""
    version: int = 1

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @classmethod
    def of(cls, record: EmployeeRecord) -> Self:
        return cls(
            guid=record.guid,
            first_name=record.first_name,
            last_name=record.last_name,
            email=record.email,
            salary=record.salary,
            title=record.title,
            version=record.version,
        )


class EmployeeCreated(EmployeeChanged, type="employee.created", version=2):
    """A new employee was recorded.

    Version 2 adds ``display_name``, the name to show for the employee; version 1
    events (older outbox rows, other producers) get it from first and last name on
    the way in. Consumers of version 1 (``giftcards``) read version 2 as it is.
    """

    display_name: str

    @property
    def name(self) -> str:
        return self.display_name

    @classmethod
    def of(cls, record: EmployeeRecord) -> Self:
        return cls(**EmployeeChanged.of(record).model_dump(), display_name=record.name)


@EmployeeCreated.upcast_from(1)
def _display_name(payload: dict[str, Any]) -> dict[str, Any]:
    """Version 1 had no ``display_name``: first and last name make it."""
    first, last = payload.get("first_name", ""), payload.get("last_name", "")
    return {**payload, "display_name": f"{first} {last}".strip()}


class EmployeeUpdated(EmployeeChanged, type="employee.updated"):
    """An employee's record changed; the event holds the record after the change."""


class EmployeeDeleted(EmployeeChanged, type="employee.deleted"):
    """An employee left; the event holds the record as it was last."""


class SearchEmployees(herald.Event, type="employees.search"):
    """Employees whose given attributes equal these (all of them when none given)."""

    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    limit: int = 100
    offset: int = 0


class GetEmployee(herald.Event, type="employees.get"):
    guid: str


class CreateEmployee(herald.Event, type="employees.create"):
    """Fields arrive as text, as typed in a form; the service validates them."""

    first_name: str = ""
    last_name: str = ""
    email: str = ""
    salary: str = ""
    title: str = ""


class UpdateEmployee(herald.Event, type="employees.update"):
    """Fields left ``None`` keep their value."""

    guid: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    salary: str | None = None
    title: str | None = None


class DeleteEmployee(herald.Event, type="employees.delete"):
    guid: str
