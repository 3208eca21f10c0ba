"""The reference HR platform: four services that talk only through Herald.

``employees`` owns the employee database and answers requests over the bus;
``hr-web`` is the browser interface (no database of its own); ``payroll`` and
``giftcards`` keep their own databases from ``employee.*`` events. Run one with
``python -m hr_platform SERVICE`` or all with ``python -m hr_platform platform``.
"""

__all__ = ["DEFAULT_BROKER", "DEFAULT_PORTS", "SERVICES"]

SERVICES = ("employees", "hr-web", "payroll", "giftcards")
"""Every service, in the order the supervisor starts them."""

DEFAULT_BROKER = "sqlite:///./var/herald.db?retain=7d"
"""The platform's broker without ``--broker`` or ``$HERALD_BROKER``: Herald's embedded
default, retaining a week of events so that ``giftcards --backfill`` has history."""

DEFAULT_PORTS = {"hr-web": 8000, "payroll": 8001, "giftcards": 8002}
"""HTTP ports; ``employees`` serves HTTP only when given a port."""
