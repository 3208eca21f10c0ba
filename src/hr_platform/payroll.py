"""The ``payroll`` service: a payroll record per employee, kept from employee events.

``employee.created`` opens a record (yearly salary, paid monthly), ``employee.updated``
changes it and ``employee.deleted`` closes it. Every change also appends a line to
the record's history. Each delivery is claimed in the inbox inside the transaction
that makes its change, so a redelivered event (after a crash, a broker restart or a
relay retry) changes nothing twice, however many replicas consume the queue. Each line
of history names the release that wrote it (``--release``), which shows a rolling
deploy's progress. Events older than the record's version (possible
only if an old event is replayed from the dead letters) are ignored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel
from sqlalchemy import DateTime, ForeignKey, Integer, MetaData, Numeric, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import herald
from herald.inbox import Inbox

from .database import Database
from .events import EmployeeChanged, EmployeeCreated, EmployeeDeleted, EmployeeUpdated
from .pages import render
from .process import SHUTDOWN_TIMEOUT, Listener, run_consumer_service

__all__ = ["PayrollRecord", "PayrollView", "build_service", "create_app", "run_payroll"]

RELEASE = "dev"
PAY_SCHEDULE = "monthly"
PERIODS = {"monthly": 12, "biweekly": 26, "weekly": 52}
metadata = MetaData()
inbox = Inbox("payroll_inbox", metadata=metadata)


class _Base(DeclarativeBase):
    metadata = metadata


class PayrollRecord(_Base):
    __tablename__ = "payroll_records"

    employee_guid: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(201))
    email: Mapped[str] = mapped_column(String(254))
    yearly_salary: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    pay_schedule: Mapped[str] = mapped_column(String(16), default=PAY_SCHEDULE)
    status: Mapped[str] = mapped_column(String(8), default="open")
    version: Mapped[int] = mapped_column(Integer)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PayrollChange(_Base):
    """One line of a record's history: which event changed it, and how."""

    __tablename__ = "payroll_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    employee_guid: Mapped[str] = mapped_column(
        ForeignKey("payroll_records.employee_guid"), index=True
    )
    change: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    release: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The release of payroll that made the change (``--release``; none before it existed)."""


class PayrollView(BaseModel):
    """A payroll record as the page and the API show it."""

    employee_guid: str
    name: str
    email: str
    yearly_salary: Decimal
    pay_schedule: str
    per_period: Decimal
    status: str
    version: int
    changes: int


def _apply(record: PayrollRecord, event: EmployeeChanged) -> None:
    record.name = event.name
    record.email = event.email
    record.yearly_salary = event.salary
    record.version = event.version


async def _change(
    session: AsyncSession, event: EmployeeChanged, ctx: herald.Context, release: str
) -> None:
    record = await session.get(PayrollRecord, event.guid)
    now = datetime.now(UTC)
    if record is None:
        record = PayrollRecord(employee_guid=event.guid, opened_at=now, status="open")
        _apply(record, event)
        session.add(record)
        change = "opened"
    elif event.version <= record.version:
        ctx.logger.info("ignoring %s v%d of %s", ctx.message.type, event.version, event.guid)
        return
    else:
        _apply(record, event)
        change = "updated"
    if isinstance(event, EmployeeDeleted):
        record.status, record.closed_at, change = "closed", now, "closed"
    await session.flush()
    session.add(
        PayrollChange(
            employee_guid=event.guid,
            change=change,
            message_id=ctx.message.id,
            at=now,
            release=release,
        )
    )


LIFECYCLE: dict[str, type[EmployeeChanged]] = {
    cls.event_type(): cls for cls in (EmployeeCreated, EmployeeUpdated, EmployeeDeleted)
}


def build_service(db: Database, release: str = RELEASE) -> herald.Service:
    """Payroll's handlers; each change it makes records ``release``."""
    service = herald.Service("payroll", concurrency=16)

    async def handle(event: EmployeeChanged, ctx: herald.Context) -> None:
        async with db.writing(), db.sessions() as session, session.begin():
            if not await inbox.claim(session, ctx):
                ctx.logger.info("%s already handled", ctx.message.id)
                return
            await _change(session, event, ctx, release)

    # One queue for the whole employee lifecycle: events of one employee are then
    # handled in publish order across types (a delete never overtakes an update).
    @service.on("employee.*", name="employee")
    async def employee_changed(message: herald.Message, ctx: herald.Context) -> None:
        """Open, update or close the employee's payroll record."""
        event_class = LIFECYCLE.get(message.type)
        if event_class is None:
            ctx.logger.info("no payroll change for %s", message.type)
            return
        await handle(ctx.decode(event_class), ctx)

    return service


async def _views(db: Database, guid: str | None = None) -> list[PayrollView]:
    changes = (
        select(PayrollChange.employee_guid, func.count().label("n"))
        .group_by(PayrollChange.employee_guid)
        .subquery()
    )
    query = (
        select(PayrollRecord, changes.c.n)
        .outerjoin(changes, changes.c.employee_guid == PayrollRecord.employee_guid)
        .order_by(PayrollRecord.opened_at, PayrollRecord.employee_guid)
    )
    if guid is not None:
        query = query.where(PayrollRecord.employee_guid == guid)
    async with db.sessions() as session:
        rows = (await session.execute(query)).all()
    return [
        PayrollView(
            employee_guid=record.employee_guid,
            name=record.name,
            email=record.email,
            yearly_salary=Decimal(record.yearly_salary).quantize(Decimal("0.01")),
            pay_schedule=record.pay_schedule,
            per_period=(
                Decimal(record.yearly_salary) / PERIODS.get(record.pay_schedule, 12)
            ).quantize(Decimal("0.01")),
            status=record.status,
            version=record.version,
            changes=n or 0,
        )
        for record, n in rows
    ]


def create_app(db: Database) -> FastAPI:
    app = FastAPI(title="payroll", docs_url="/api/docs", redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/")
    async def home() -> Response:
        return RedirectResponse("/payroll", status_code=303)

    @app.get("/payroll")
    async def page(request: Request) -> Response:
        records = await _views(db)
        context = {"records": records, "app_name": "Payroll"}
        return render(request, "payroll.html", context)

    @app.get("/api/payroll")
    async def index() -> list[PayrollView]:
        return await _views(db)

    @app.get("/api/payroll/{guid}")
    async def show(guid: str) -> PayrollView:
        found = await _views(db, guid)
        if not found:
            raise HTTPException(404, f"no payroll record for employee {guid}")
        return found[0]

    return app


async def run_payroll(
    broker: str,
    db_url: str,
    listener: Listener,
    *,
    release: str = RELEASE,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
) -> None:
    db = Database(db_url, metadata)
    service = build_service(db, release)
    await run_consumer_service(
        "payroll",
        broker,
        db,
        service,
        create_app(db),
        listener,
        shutdown_timeout=shutdown_timeout,
    )
