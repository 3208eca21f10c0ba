"""The SQLite broker's settings, parsed from ``sqlite:///path/to/file.db?option=value``.

``sqlite:///var/herald.db`` is ``./var/herald.db`` relative to the working directory,
``sqlite:////srv/herald.db`` an absolute path.

>>> s = SQLiteSettings.from_url("sqlite:////srv/herald.db?lease=10&dlq_retention=0&retain=7d")
>>> str(s.path), s.lease, s.dlq_retention, s.timeout, s.retain
('/srv/herald.db', 10.0, 0.0, 5.0, 604800.0)
>>> SQLiteSettings.from_url("sqlite://srv/herald.db")
Traceback (most recent call last):
...
herald.errors.BrokerURLError: invalid broker URL 'sqlite://srv/herald.db': host: sqlite:// \
takes a file path, not a host: sqlite:///relative.db or sqlite:////absolute.db
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import BrokerURLError
from ...url import BrokerURL

__all__ = ["DAY", "SQLiteSettings"]

DAY = 86_400.0
_SYNCHRONOUS = ("normal", "full")
_OPTIONS = {"lease", "poll", "timeout", "synchronous", "dlq_retention", "retain"}


@dataclass(frozen=True, slots=True)
class SQLiteSettings:
    """Where the database file is and how the broker uses it.

    lease:          seconds a delivery stays leased to a consumer without being
                    renewed; a live consumer renews what it holds every ``lease / 3``.
    poll:           seconds between safety polls of an idle consumer.
    timeout:        seconds a write waits for the database (the writer lock of other
                    processes, a busy file) before it fails.
    synchronous:    ``normal`` (no fsync per commit in WAL mode; a power loss may lose
                    the last transactions, a crashed process loses nothing) or
                    ``full`` (fsync every commit).
    dlq_retention:  seconds dead letters are kept (``0``: for ever).
    retain:         seconds every published event is kept for backfill. In the URL a
                    duration: ``retain=7d``, ``12h``, ``30m`` or seconds. It is the
                    file's setting, stored in it, so every process publishing through
                    the file retains; ``None`` (not in the URL) keeps the file's (``0``
                    for a new file: nothing is kept, and backfill is refused).
    """

    path: Path
    lease: float = 30.0
    poll: float = 1.5
    timeout: float = 5.0
    synchronous: str = "normal"
    dlq_retention: float = 14 * DAY
    retain: float | None = None
    lock_path: Path = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(os.path.abspath(self.path)))
        object.__setattr__(self, "lock_path", self.path.with_name(self.path.name + ".lock"))
        if self.synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be 'normal' or 'full', not {self.synchronous!r}")
        if (
            self.lease < 1
            or self.poll <= 0
            or self.timeout < 0
            or self.dlq_retention < 0
            or (self.retain or 0) < 0
        ):
            raise ValueError(f"invalid SQLite broker settings: {self}")

    @classmethod
    def from_url(cls, url: str) -> SQLiteSettings:
        parsed = BrokerURL.parse(url)
        parsed.reject_unknown(_OPTIONS)
        if parsed.hosts or parsed.username or parsed.password:
            raise BrokerURLError(
                str(parsed),
                "host",
                "sqlite:// takes a file path, not a host: "
                "sqlite:///relative.db or sqlite:////absolute.db",
            )
        if not parsed.path or parsed.path.endswith("/"):
            raise BrokerURLError(
                str(parsed), "path", "names no database file, e.g. sqlite:///var/herald.db"
            )
        synchronous = parsed.option("synchronous", "normal").lower()
        if synchronous not in _SYNCHRONOUS:
            raise BrokerURLError(
                str(parsed), "query parameter 'synchronous'", "must be 'normal' or 'full'"
            )
        return cls(
            Path(parsed.path),
            lease=parsed.float_option("lease", 30.0, minimum=1.0),
            poll=parsed.float_option("poll", 1.5, minimum=0.05),
            timeout=parsed.float_option("timeout", 5.0),
            synchronous=synchronous,
            dlq_retention=parsed.float_option("dlq_retention", 14 * DAY),
            retain=parsed.duration_option("retain", 0) if "retain" in parsed.query else None,
        )
