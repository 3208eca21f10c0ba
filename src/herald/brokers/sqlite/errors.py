"""SQLite and file-system errors as Herald's, in one table.

A SQLite file holds no credentials and its errors name none, so ``describe`` only
keeps the first line. Errors that mean "someone else is writing right now"
(``SQLITE_BUSY``, ``SQLITE_LOCKED``) are transient: a write retries through them
until the broker's ``timeout`` runs out.

>>> import sqlite3
>>> TABLE.convert(sqlite3.OperationalError("database is locked"), "acking m1").args[0]
'acking m1 failed: OperationalError: database is locked'
>>> TABLE.convert(LockTimeout("/srv/h.db.lock", 5.0), "publishing").args[0]
'publishing failed: the writer lock /srv/h.db.lock is held by another process (waited 5s)'
"""

from __future__ import annotations

import sqlite3

from ...errors import BrokerError, ErrorTable

__all__ = ["TABLE", "LockTimeout", "is_transient"]

_BUSY, _LOCKED = 5, 6


class LockTimeout(Exception):
    """The writer lock (``<db>.lock``) could not be taken within the deadline."""

    def __init__(self, lock_path: object, waited: float) -> None:
        super().__init__(
            f"the writer lock {lock_path} is held by another process (waited {waited:g}s)"
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, LockTimeout):
        return str(exc)
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines and lines[0] else type(exc).__name__


TABLE = ErrorTable(
    [(sqlite3.Error, BrokerError), (LockTimeout, BrokerError), (OSError, BrokerError)],
    describe=_describe,
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is busy now and a retry may succeed."""
    return isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode & 0xFF in (
        _BUSY,
        _LOCKED,
    )
