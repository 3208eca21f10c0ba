"""The ``giftcards`` service: every new employee gets a weekly dining gift card.

Added to a running platform at any time: its queue starts collecting
``employee.created`` events when the service first starts, and nothing else changes.
With ``backfill=True`` (``python -m hr_platform giftcards --backfill``) the queue, when
first created, starts with the retained ``employee.created`` events: every existing
employee gets a card, once, and then each new one.
It reads only the fields it needs, so an ``EmployeeMessage`` in protobuf from the
Ruby platform (guid and names) earns a card just like our JSON events do.

Every card is topped up with its weekly amount once a week: a recurring schedule
(``@service.every``) whose occurrences every replica publishes with the same id, so
the inbox lets each week's top-up happen once. The period is
``$GIFTCARDS_TOPUP_PERIOD`` seconds or ``--topup-period`` (default a week), so a test
can run weeks in seconds.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel
from sqlalchemy import (
    DateTime,
    Integer,
    MetaData,
    Numeric,
    String,
    UniqueConstraint,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import herald
from herald.inbox import Inbox

from .database import Database
from .pages import render
from .process import SHUTDOWN_TIMEOUT, Listener, run_consumer_service

__all__ = [
    "GiftCard",
    "GiftCardView",
    "NewEmployee",
    "TopUp",
    "build_service",
    "run_giftcards",
    "topup_period",
]

WEEKLY_AMOUNT = Decimal("25.00")
WEEK = timedelta(weeks=1)
PERIOD_VARIABLE = "GIFTCARDS_TOPUP_PERIOD"
metadata = MetaData()
inbox = Inbox("giftcards_inbox", metadata=metadata)


class NewEmployee(herald.Event, type="employee.created"):
    """The part of ``employee.created`` a gift card needs."""

    guid: str
    first_name: str
    last_name: str
    email: str = ""


class _Base(DeclarativeBase):
    metadata = metadata


class GiftCard(_Base):
    __tablename__ = "gift_cards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    employee_guid: Mapped[str] = mapped_column(String(32), unique=True)
    holder: Mapped[str] = mapped_column(String(201))
    email: Mapped[str] = mapped_column(String(254))
    code: Mapped[str] = mapped_column(String(19))
    weekly_amount: Mapped[Decimal] = mapped_column(Numeric(8, 2))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TopUp(_Base):
    """One card's top-up for one slot of the weekly schedule."""

    __tablename__ = "gift_card_topups"
    __table_args__ = (UniqueConstraint("employee_guid", "slot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    employee_guid: Mapped[str] = mapped_column(String(32), index=True)
    slot: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    topped_up_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GiftCardView(BaseModel):
    employee_guid: str
    holder: str
    email: str
    code: str
    weekly_amount: Decimal
    issued_at: datetime
    balance: Decimal = Decimal("0.00")
    """The sum of the card's top-ups."""
    top_ups: int = 0


def topup_period(seconds: float | None = None) -> timedelta:
    """How often cards are topped up: ``seconds`` if given, else
    ``$GIFTCARDS_TOPUP_PERIOD`` (seconds), else a week.

    >>> topup_period(2.5)
    datetime.timedelta(seconds=2, microseconds=500000)
    """
    if seconds is None:
        text = os.environ.get(PERIOD_VARIABLE, "")
        if not text:
            return WEEK
        try:
            seconds = float(text)
        except ValueError:
            raise ValueError(
                f"${PERIOD_VARIABLE}: {text[:40]!r} is not a number of seconds"
            ) from None
    if not seconds > 0:
        raise ValueError(f"the top-up period must be a positive number of seconds, not {seconds}")
    return timedelta(seconds=seconds)


def _code() -> str:
    digits = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(16))
    return "-".join(digits[i : i + 4] for i in range(0, 16, 4))


def build_service(
    db: Database, period: timedelta = WEEK, *, backfill: bool = False
) -> herald.Service:
    service = herald.Service("giftcards", concurrency=16)

    @service.every(period, name="topup")
    async def top_up(occurrence: herald.Occurrence, ctx: herald.Context) -> None:
        """Top up every card issued so far with its weekly amount (once per slot)."""
        async with db.writing(), db.sessions() as session, session.begin():
            if not await inbox.claim(session, ctx):
                return
            cards = select(
                GiftCard.employee_guid,
                literal(occurrence.slot),
                GiftCard.weekly_amount,
                literal(datetime.now(UTC), DateTime(timezone=True)),
            )
            columns = ["employee_guid", "slot", "amount", "topped_up_at"]
            await session.execute(insert(TopUp).from_select(columns, cards))

    @service.on(NewEmployee, backfill=backfill)
    async def issue_card(event: NewEmployee, ctx: herald.Context) -> None:
        """Issue the new employee's weekly dining gift card (once)."""
        async with db.writing(), db.sessions() as session, session.begin():
            if not await inbox.claim(session, ctx):
                return
            if await session.scalar(
                select(GiftCard.id).where(GiftCard.employee_guid == event.guid)
            ):
                ctx.logger.info("%s already has a card", event.guid)
                return
            session.add(
                GiftCard(
                    employee_guid=event.guid,
                    holder=f"{event.first_name} {event.last_name}",
                    email=event.email,
                    code=_code(),
                    weekly_amount=WEEKLY_AMOUNT,
                    issued_at=datetime.now(UTC),
                )
            )

    return service


async def _views(db: Database) -> list[GiftCardView]:
    async with db.sessions() as session:
        cards = await session.scalars(select(GiftCard).order_by(GiftCard.id))
        totals = {
            guid: (Decimal(total), count)
            for guid, total, count in await session.execute(
                select(TopUp.employee_guid, func.sum(TopUp.amount), func.count()).group_by(
                    TopUp.employee_guid
                )
            )
        }
        return [
            GiftCardView(
                employee_guid=card.employee_guid,
                holder=card.holder,
                email=card.email,
                code=card.code,
                weekly_amount=Decimal(card.weekly_amount).quantize(Decimal("0.01")),
                issued_at=card.issued_at.replace(tzinfo=card.issued_at.tzinfo or UTC),
                balance=totals.get(card.employee_guid, (Decimal(0), 0))[0].quantize(
                    Decimal("0.01")
                ),
                top_ups=totals.get(card.employee_guid, (Decimal(0), 0))[1],
            )
            for card in cards
        ]


def create_app(db: Database) -> FastAPI:
    app = FastAPI(title="giftcards", docs_url="/api/docs", redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/")
    async def home() -> Response:
        return RedirectResponse("/giftcards", status_code=303)

    @app.get("/giftcards")
    async def page(request: Request) -> Response:
        context = {"cards": await _views(db), "app_name": "Gift cards"}
        return render(request, "giftcards.html", context)

    @app.get("/api/giftcards")
    async def index() -> list[GiftCardView]:
        return await _views(db)

    return app


async def run_giftcards(
    broker: str,
    db_url: str,
    listener: Listener,
    period: timedelta = WEEK,
    *,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    backfill: bool = False,
) -> None:
    db = Database(db_url, metadata)
    await run_consumer_service(
        "giftcards",
        broker,
        db,
        build_service(db, period, backfill=backfill),
        create_app(db),
        listener,
        shutdown_timeout=shutdown_timeout,
    )
