"""The employee directory: the employees service's tables and every change made to them.

Each change writes the employee row and stages its event in the outbox in one
transaction, so an event is published if and only if the change committed, even
when the broker is down at that moment.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Integer, MetaData, Numeric, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import herald
from herald.outbox import Outbox

from .database import Database
from .events import (
    EmployeeChanged,
    EmployeeCreated,
    EmployeeDeleted,
    EmployeeList,
    EmployeeRecord,
    EmployeeUpdated,
    SearchEmployees,
)
from .validation import clean_employee

__all__ = ["MAX_PAGE", "Directory", "Employee", "metadata", "outbox"]

MAX_PAGE = 1000
metadata = MetaData()
outbox = Outbox("employees_outbox", metadata=metadata, source="employees")
"""Where changes stage their events; the service's relay publishes from it."""


class _Base(DeclarativeBase):
    metadata = metadata


class Employee(_Base):
    __tablename__ = "employees"

    guid: Mapped[str] = mapped_column(String(32), primary_key=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    salary: Mapped[Decimal] = mapped_column(Numeric(12, 2, asdecimal=True))
    title: Mapped[str] = mapped_column(String(100), default="")
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    def record(self) -> EmployeeRecord:
        return EmployeeRecord(
            guid=self.guid,
            first_name=self.first_name,
            last_name=self.last_name,
            email=self.email,
            salary=Decimal(self.salary).quantize(Decimal("0.01")),
            title=self.title,
            version=self.version,
            created_at=_utc(self.created_at),
            updated_at=_utc(self.updated_at),
        )


_TAKEN = "email is already taken by another employee"


@contextlib.contextmanager
def _email_taken_is_invalid() -> Iterator[None]:
    """Two writers racing for one email: the unique key stops the second (PostgreSQL)."""
    try:
        yield
    except IntegrityError as exc:
        raise herald.Invalid("employee is invalid: " + _TAKEN, fields={"email": _TAKEN}) from exc


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were stored as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Directory:
    """Search, read and change employees; changes stage their events in the outbox."""

    def __init__(self, db: Database, events: Outbox = outbox) -> None:
        self.db = db
        self.outbox = events

    async def search(self, query: SearchEmployees) -> EmployeeList:
        filters = [
            getattr(Employee, name) == value
            for name in ("first_name", "last_name", "email")
            if (value := getattr(query, name)) is not None
        ]
        limit = max(0, min(query.limit, MAX_PAGE))
        async with self.db.sessions() as session:
            total = await session.scalar(select(func.count()).select_from(Employee).where(*filters))
            rows = await session.scalars(
                select(Employee)
                .where(*filters)
                .order_by(Employee.created_at, Employee.guid)
                .offset(max(0, query.offset))
                .limit(limit)
            )
            return EmployeeList(records=[row.record() for row in rows], total=total or 0)

    async def get(self, guid: str) -> EmployeeRecord:
        async with self.db.sessions() as session:
            return (await self._find(session, guid)).record()

    async def create(self, fields: dict[str, Any]) -> EmployeeRecord:
        cleaned = clean_employee(fields)
        now = datetime.now(UTC)
        employee = Employee(
            guid=uuid.uuid4().hex, version=1, created_at=now, updated_at=now, **cleaned
        )
        with _email_taken_is_invalid():
            async with self.db.writing(), self.db.sessions() as session, session.begin():
                await self._check_email(session, cleaned["email"], None)
                session.add(employee)
                return await self._stage(session, employee, EmployeeCreated)

    async def update(self, guid: str, fields: dict[str, Any]) -> EmployeeRecord:
        cleaned = clean_employee(fields, partial=True)
        with _email_taken_is_invalid():
            async with self.db.writing(), self.db.sessions() as session, session.begin():
                employee = await self._find(session, guid, lock=True)
                if "email" in cleaned:
                    await self._check_email(session, cleaned["email"], guid)
                changed = {k: v for k, v in cleaned.items() if getattr(employee, k) != v}
                if not changed:
                    return employee.record()
                for name, value in changed.items():
                    setattr(employee, name, value)
                employee.version += 1
                employee.updated_at = datetime.now(UTC)
                return await self._stage(session, employee, EmployeeUpdated)

    async def delete(self, guid: str) -> EmployeeRecord:
        async with self.db.writing(), self.db.sessions() as session, session.begin():
            employee = await self._find(session, guid, lock=True)
            employee.version += 1
            record = await self._stage(session, employee, EmployeeDeleted)
            await session.delete(employee)
            return record

    async def _find(self, session: AsyncSession, guid: str, *, lock: bool = False) -> Employee:
        employee = await session.get(Employee, guid, with_for_update=lock)
        if employee is None:
            raise herald.NotFound(f"no employee with guid {guid!r}", guid=guid)
        return employee

    async def _check_email(self, session: AsyncSession, email: str, guid: str | None) -> None:
        taken = await session.scalar(select(Employee.guid).where(Employee.email == email))
        if taken is not None and taken != guid:
            raise herald.Invalid(
                f"employee is invalid: {email} is already taken",
                fields={"email": _TAKEN},
            )

    async def _stage(
        self, session: AsyncSession, employee: Employee, kind: type[EmployeeChanged]
    ) -> EmployeeRecord:
        await session.flush()
        record = employee.record()
        await self.outbox.stage(session, kind.of(record), key=record.guid)
        return record
