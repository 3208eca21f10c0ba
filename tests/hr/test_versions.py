"""employee.created is version 2: payroll upcasts version 1 events, giftcards (still
on version 1) reads version 2 ones."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

import herald
from hr_platform import giftcards, payroll
from hr_platform.database import Database
from hr_platform.events import EmployeeCreated, EmployeeRecord

from .platform import eventually

VERSION_1 = {
    "guid": "v1guid",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.com",
    "salary": "5000.00",
    "title": "",
    "version": 1,
}
"""An employee.created as the employees service wrote it before version 2 (no
``display_name``, no ``dataversion`` header): outbox rows written then still hold it."""


async def test_payroll_upcasts_version_1_and_giftcards_reads_version_2(workdir: Path) -> None:
    pay_db = Database(f"sqlite:///{workdir}/payroll.db", payroll.metadata)
    card_db = Database(f"sqlite:///{workdir}/giftcards.db", giftcards.metadata)
    await pay_db.create_tables()
    await card_db.create_tables()
    now = datetime.now(UTC)
    record = EmployeeRecord(
        guid="v2guid", first_name="Alan", last_name="Turing", email="alan@example.com",
        salary=Decimal("6000"), created_at=now, updated_at=now,
    )  # fmt: skip
    try:
        async with herald.connect(f"memory://versions-{uuid.uuid4().hex[:8]}") as bus:
            workers = [
                await bus.start(payroll.build_service(pay_db)),
                await bus.start(giftcards.build_service(card_db)),
            ]
            body = json.dumps(VERSION_1).encode()
            await bus.publish(herald.Message(type="employee.created", body=body), key="v1guid")
            sent = await bus.publish(EmployeeCreated.of(record), key="v2guid")
            names: dict[str, str] = {}
            holders: dict[str, str] = {}

            async def both_handled() -> bool:
                async with pay_db.sessions() as session:
                    names.update(
                        (r.employee_guid, r.name)
                        for r in await session.scalars(select(payroll.PayrollRecord))
                    )
                async with card_db.sessions() as session:
                    holders.update(
                        (c.employee_guid, c.holder)
                        for c in await session.scalars(select(giftcards.GiftCard))
                    )
                return len(names) == 2 and len(holders) == 2

            await eventually(both_handled, timeout=10, what="both employees handled")
            for worker in workers:
                await worker.stop()
            assert await bus.dead_letters("payroll") == []
            assert await bus.dead_letters("giftcards") == []
    finally:
        await pay_db.close()
        await card_db.close()
    assert sent.headers["dataversion"] == "2"
    assert names == {"v1guid": "Ada Lovelace", "v2guid": "Alan Turing"}
    assert holders == {"v1guid": "Ada Lovelace", "v2guid": "Alan Turing"}
