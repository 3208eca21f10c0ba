"""``redis://[[user]:password@]host[:6379][/db]?namespace=NS&lease=10&block=1&dlq_retention=1209600``.

>>> s = RedisSettings.from_url("rediss://:secret@cache:6380/3?namespace=ns&lease=2.5")
>>> s.tls, s.port, s.db, s.lease, s.dlq_retention, s.shown_url
(True, 6380, 3, 2.5, 1209600.0, 'rediss://:***@cache:6380/3?namespace=ns&lease=2.5')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import BrokerURLError
from ...url import BrokerURL

__all__ = ["DEFAULT_DLQ_RETENTION", "RedisSettings"]

DEFAULT_DLQ_RETENTION = 1_209_600.0
"""Fourteen days, the longest Amazon SQS keeps anything."""
_OPTIONS = {"namespace", "lease", "block", "dlq_retention"}


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where the Redis server is and how the broker uses it.

    lease:          seconds an unsettled delivery may go unrenewed before another
                    consumer claims it (its consumer renews it every lease/3).
    block:          longest ``XREADGROUP BLOCK`` wait, in seconds.
    dlq_retention:  seconds dead letters are kept; 0 keeps them for ever.
    """

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    namespace: str = ""
    lease: float = 10.0
    block: float = 1.0
    dlq_retention: float = DEFAULT_DLQ_RETENTION
    shown_url: str = ""

    def __post_init__(self) -> None:
        if not self.shown_url:
            scheme = "rediss" if self.tls else "redis"
            object.__setattr__(self, "shown_url", f"{scheme}://{self.host}:{self.port}/{self.db}")

    @classmethod
    def from_url(cls, url: str) -> RedisSettings:
        """Settings from a ``redis://`` or ``rediss://`` URL; :class:`herald.BrokerURLError`
        names the part that is wrong."""
        parsed = BrokerURL.parse(url)
        if parsed.scheme not in ("redis", "rediss"):
            raise BrokerURLError(str(parsed), "scheme", "expected redis:// or rediss://")
        parsed.require_host()
        parsed.reject_unknown(_OPTIONS)
        if len(parsed.hosts) != 1:
            raise BrokerURLError(str(parsed), "host", "redis:// takes exactly one host")
        host, port = parsed.hosts[0]
        db_text = parsed.path.strip("/") or "0"
        if not (db_text.isascii() and db_text.isdigit()):
            raise BrokerURLError(str(parsed), "path", f"{db_text[:20]!r} is not a database number")
        return cls(
            host=host,
            port=port or 6379,
            db=int(db_text),
            username=parsed.username,
            password=parsed.password,
            tls=parsed.scheme == "rediss",
            namespace=parsed.option("namespace", ""),
            lease=parsed.float_option("lease", 10.0, 0.1),
            block=parsed.float_option("block", 1.0, 0.01),
            dlq_retention=parsed.float_option("dlq_retention", DEFAULT_DLQ_RETENTION, 0.0),
            shown_url=str(parsed),
        )

    @property
    def lease_ms(self) -> int:
        return max(1, round(self.lease * 1000))

    @property
    def dlq_retention_ms(self) -> int:
        """0 keeps dead letters for ever."""
        return max(1, round(self.dlq_retention * 1000)) if self.dlq_retention > 0 else 0
