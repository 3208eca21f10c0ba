"""Transactional outbox: stage events in the same database transaction as the data.

A service that writes a row and must announce it cannot publish to the broker inside
its transaction (the broker may be down, the transaction may still roll back) nor
after it (the process may die in between). Instead it *stages* the event in an
outbox table within the very transaction that writes the row; an
:class:`~herald.outbox_relay.OutboxRelay` later publishes committed rows with broker
confirmation and then deletes them (or marks them sent). An event is published if and
only if its transaction committed, at least once, in commit order per key.

>>> import asyncio, herald
>>> from sqlalchemy.ext.asyncio import create_async_engine, async_sessionmaker
>>> from herald.outbox import Outbox, OutboxRelay
>>> class EmployeeCreated(herald.Event, type="employee.created"):
...     guid: str
>>> outbox = Outbox(source="employees")
>>> async def main() -> list[str]:
...     engine = create_async_engine("sqlite+aiosqlite://")
...     await outbox.create(engine)
...     sessions = async_sessionmaker(engine)
...     async with sessions() as session, session.begin():
...         staged = await outbox.stage(session, EmployeeCreated(guid="g1"), key="g1")
...     async with herald.connect("memory://outbox-doctest") as bus:
...         sent = await OutboxRelay(engine, bus, outbox).drain()
...     await engine.dispose()
...     return [staged.type, staged.subject, str(sent)]
>>> asyncio.run(main())
['employee.created', 'g1', '1']

Errors from the database raised by :meth:`Outbox.stage` are the application's own
transaction failing, so they propagate unchanged (``sqlalchemy.exc.SQLAlchemyError``).
"""

from __future__ import annotations

from .relay import OutboxRelay
from .staging import Outbox
from .tables import Executor, dialect_of, insert_ignoring_duplicates, row_message

__all__ = [
    "Executor",
    "Outbox",
    "OutboxRelay",
    "dialect_of",
    "insert_ignoring_duplicates",
    "row_message",
]
