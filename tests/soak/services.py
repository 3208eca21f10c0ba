"""The HR platform's shape in three kinds of process, for the chaos soak.

``python -m tests.soak.services publish URL DB OUT --total N --generation G --hold-at H,...``
is the publishing service (like ``employees``): each transaction writes a few
``hires`` rows and stages one ``soak.employee.hired`` event per row in its outbox
(``herald.outbox``); a relay in the same process publishes them. About one
transaction in twenty is rolled back on purpose. It stops writing once the table
holds ``N`` rows, waits until its outbox is empty, and runs until SIGTERM. Row
numbers start at ``G * 10**7``, so a restarted publisher (the next generation)
never reuses the number of a row that a killed one had not committed. Once the table
holds ``H`` rows (the first of the ``--hold-at`` counts), the next transaction stops
after staging and waits, open, for a SIGKILL.

``python -m tests.soak.services consume URL SERVICE DB OUT`` is one replica of a
consuming service (like ``payroll``): every delivery is appended to OUT before it is
handled, then handled through the inbox (``herald.inbox``), which records the effect
(an ``effects`` row) in the service's own database in the claim's transaction. Once
its queue is declared (events published from then on reach it) it creates
``OUT.ready`` (OUT with the suffix ``.ready``).

The publisher's OUT has one line per step, times from ``time.monotonic()``::

    b <first> <count>        a transaction began (rows first..first+count-1)
    held <first>             it is held open, waiting to be killed
    c <first> <count> <t>    it committed
    r <first> <count>        it was rolled back on purpose
    done <t>                 every row written and its event published
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

import sqlalchemy as sa

import herald
from herald.inbox import Inbox, InboxMiddleware
from herald.middleware import Middleware, Next, Outcome
from herald.outbox import Outbox, OutboxRelay
from hr_platform.database import Database

__all__ = [
    "GENERATION_SPAN",
    "EmployeeHired",
    "consumer_tables",
    "publisher_tables",
]

GENERATION_SPAN = 10**7
ROWS_PER_TRANSACTION = 20
ROLLBACK_SHARE = 0.05


class EmployeeHired(herald.Event, type="soak.employee.hired"):
    n: int


def publisher_tables() -> tuple[sa.MetaData, sa.Table, Outbox]:
    metadata = sa.MetaData()
    hires = sa.Table(
        "hires",
        metadata,
        sa.Column("n", sa.BigInteger, primary_key=True),
        sa.Column("committed_by", sa.Integer, nullable=False),
    )
    return metadata, hires, Outbox("hires_outbox", metadata=metadata, source="employees")


def consumer_tables(service: str) -> tuple[sa.MetaData, sa.Table, Inbox]:
    metadata = sa.MetaData()
    effects = sa.Table(
        "effects",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("n", sa.BigInteger, nullable=False, index=True),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    return metadata, effects, Inbox(f"{service}_inbox", metadata=metadata)


def _line(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


async def publish(
    url: str, db_path: Path, out: TextIO, total: int, generation: int, hold: int, rate: float
) -> None:
    metadata, hires, outbox = publisher_tables()
    db = Database(f"sqlite:///{db_path}", metadata)
    await db.create_tables()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    rng = random.Random(generation)
    async with herald.connect(url, source="employees") as bus:
        relay = OutboxRelay(db.engine, bus, outbox, lease_ttl=15.0, max_backoff=2.0)
        relaying = asyncio.create_task(relay.run())
        async with db.engine.connect() as conn:
            written = int(
                (await conn.execute(sa.select(sa.func.count()).select_from(hires))).scalar_one()
            )
        first = generation * GENERATION_SPAN
        started, at_start = time.monotonic(), written
        while written < total and not stop.is_set():
            count = min(ROWS_PER_TRANSACTION, total - written)
            numbers = range(first, first + count)
            async with db.sessions() as session:
                await session.begin()
                _line(out, f"b {first} {count}")
                await session.execute(
                    sa.insert(hires), [{"n": n, "committed_by": os.getpid()} for n in numbers]
                )
                await outbox.stage_many(session, [(EmployeeHired(n=n), str(n)) for n in numbers])
                if hold and written >= hold:
                    _line(out, f"held {first}")
                    await stop.wait()
                    break
                if rng.random() < ROLLBACK_SHARE:
                    await session.rollback()
                    _line(out, f"r {first} {count}")
                else:
                    await session.commit()
                    written += count
                    _line(out, f"c {first} {count} {time.monotonic():.3f}")
            first += count
            ahead = (written - at_start) / rate - (time.monotonic() - started) if rate else 0.0
            await asyncio.sleep(max(ahead, 0.0))
        while not stop.is_set() and await outbox.pending(db.engine):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
        if not stop.is_set():
            _line(out, f"done {time.monotonic():.3f}")
        await stop.wait()
        relaying.cancel()
        await asyncio.gather(relaying, return_exceptions=True)
    await db.close()


class DeliveryLog(Middleware):
    """Appends ``<message id> <n>`` of every delivery to ``out`` before handling it."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    async def handle(self, ctx: herald.Context, call_next: Next) -> Outcome:
        _line(self.out, ctx.message.id)
        return await call_next(ctx)


class Writing(Middleware):
    """This process's SQLite writers take turns (see ``Database.writing``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def handle(self, ctx: herald.Context, call_next: Next) -> Outcome:
        async with self.db.writing():
            return await call_next(ctx)


async def consume(url: str, name: str, db_path: Path, out: Path) -> None:
    metadata, effects, inbox = consumer_tables(name)
    deliveries = await asyncio.to_thread(out.open, "a")
    db = Database(f"sqlite:///{db_path}", metadata)
    await db.create_tables()
    service = herald.Service(
        name,
        concurrency=8,
        middleware=[DeliveryLog(deliveries), Writing(db), InboxMiddleware(inbox, db.engine)],
    )

    @service.on(EmployeeHired)
    async def record(event: EmployeeHired, ctx: herald.Context) -> None:
        await Inbox.session(ctx).execute(
            sa.insert(effects).values(
                n=event.n, message_id=ctx.message.id, pid=os.getpid(), at=time.monotonic()
            )
        )

    async with herald.connect(url, source=name) as bus:
        for handler in service.handlers:  # the queue exists from now on: nothing missed
            await bus.broker.declare(handler.subscription)
        await asyncio.to_thread(out.with_suffix(".ready").touch)
        await bus.serve(service, shutdown_timeout=5.0)
    await db.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.soak.services")
    modes = parser.add_subparsers(dest="mode", required=True)
    pub = modes.add_parser("publish")
    pub.add_argument("url")
    pub.add_argument("db", type=Path)
    pub.add_argument("out", type=Path)
    pub.add_argument("--total", type=int, required=True)
    pub.add_argument("--generation", type=int, required=True)
    pub.add_argument("--hold-at", type=int, default=0, help="rows before holding (0: never)")
    pub.add_argument("--rate", type=float, default=0.0, help="rows per second (0: no limit)")
    con = modes.add_parser("consume")
    con.add_argument("url")
    con.add_argument("service")
    con.add_argument("db", type=Path)
    con.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.mode == "consume":
        asyncio.run(consume(args.url, args.service, args.db, args.out))
        return
    with args.out.open("a") as out:
        asyncio.run(
            publish(args.url, args.db, out, args.total, args.generation, args.hold_at, args.rate)
        )


if __name__ == "__main__":
    main(sys.argv[1:])
