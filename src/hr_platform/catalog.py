"""The platform's services as they are declared, for ``herald docs``.

Each is built as its process builds it, on a database that is never opened (an
engine connects on first use), so documenting the platform needs no database and no
broker::

    herald docs asyncapi hr_platform.catalog:services \\
        --codecs hr_platform.process:platform_codecs --broker amqp://localhost/

>>> [service.name for service in services()]
['employees', 'payroll', 'giftcards']
"""

from __future__ import annotations

from sqlalchemy import MetaData

import herald

from . import directory, employees, giftcards, payroll
from .database import Database

__all__ = ["services"]


def _unopened(metadata: MetaData) -> Database:
    return Database("sqlite:///:memory:", metadata)


def services() -> list[herald.Service]:
    """``employees``, ``payroll`` and ``giftcards``, with their handlers."""
    return [
        employees.build_service(directory.Directory(_unopened(directory.metadata))),
        payroll.build_service(_unopened(payroll.metadata)),
        giftcards.build_service(_unopened(giftcards.metadata)),
    ]
