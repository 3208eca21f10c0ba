"""``sqs://[KEY_ID:SECRET@]REGION?endpoint=URL&namespace=NS&fifo=false&visibility=30&wait=20``.

>>> s = SQSSettings.from_url(
...     "sqs://AKID:s3cret@eu-west-1?endpoint=http://127.0.0.1:5000&namespace=t1&fifo=true")
>>> s.region, s.endpoint, s.namespace, s.fifo, s.visibility, s.wait, s.dlq_retention
('eu-west-1', 'http://127.0.0.1:5000', 't1', True, 30, 20, 1209600)
>>> s.shown_url
'sqs://AKID:***@eu-west-1?endpoint=http://127.0.0.1:5000&namespace=t1&fifo=true'
>>> "s3cret" in repr(s)
False
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...errors import BrokerURLError
from ...url import BrokerURL

__all__ = ["FORTNIGHT", "MAX_VISIBILITY", "SQSSettings"]

FORTNIGHT = 1_209_600
"""Fourteen days: the longest SQS keeps a message (``MessageRetentionPeriod``)."""
MAX_VISIBILITY = 43_200
"""Twelve hours: the longest visibility timeout SQS allows."""
_OPTIONS = {
    "endpoint",
    "namespace",
    "fifo",
    "visibility",
    "wait",
    "dlq_retention",
    "retention",
    "profile",
    "pollers",
}
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
_NAMESPACE = re.compile(r"[A-Za-z0-9_-]{1,24}")


@dataclass(frozen=True, slots=True)
class SQSSettings:
    """Where SQS and SNS are and how the broker uses them; ``repr()`` hides the secret.

    endpoint:       one endpoint for SQS, SNS and CloudWatch (an emulator); None: AWS's.
    fifo:           FIFO topic and queues: order per key (``MessageGroupId`` = key) and
                    deduplication by message id; standard queues order on a best-effort basis.
    visibility:     seconds a received message stays invisible; a consumer extends it
                    every third of it while the message is held (1 to 43,200).
    wait:           long-poll seconds of a receive (0 to 20).
    retention:      seconds a queue keeps a message nobody consumed (60 to 1,209,600).
    dlq_retention:  seconds dead letters are kept (60 to 1,209,600: SQS keeps nothing
                    for ever, so 0 is refused).
    pollers:        most receive calls one consumer has in flight at once.
    """

    region: str = "us-east-1"
    endpoint: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    profile: str | None = None
    namespace: str = ""
    fifo: bool = False
    visibility: int = 30
    wait: int = 20
    retention: int = FORTNIGHT
    dlq_retention: int = FORTNIGHT
    pollers: int = 4
    shown_url: str = ""

    def __post_init__(self) -> None:
        if not self.shown_url:
            endpoint = f"?endpoint={self.endpoint}" if self.endpoint else ""
            object.__setattr__(self, "shown_url", f"sqs://{self.region}{endpoint}")

    @classmethod
    def from_url(cls, url: str) -> SQSSettings:
        """Settings from an ``sqs://`` URL; :class:`herald.BrokerURLError` names the
        part that is wrong."""
        parsed = BrokerURL.parse(url)
        shown = str(parsed)
        if parsed.scheme != "sqs":
            raise BrokerURLError(shown, "scheme", "expected sqs://")
        parsed.require_host()
        parsed.reject_unknown(_OPTIONS)
        if len(parsed.hosts) != 1 or parsed.hosts[0][1] is not None:
            raise BrokerURLError(shown, "host", "sqs:// takes one AWS region, e.g. sqs://us-east-1")
        region = parsed.hosts[0][0]
        if not _REGION.fullmatch(region):
            raise BrokerURLError(shown, "host", f"{region[:40]!r} is not an AWS region")
        if parsed.path.strip("/"):
            raise BrokerURLError(shown, "path", "sqs:// takes no path")
        if (parsed.username is None) != (parsed.password is None):
            raise BrokerURLError(shown, "userinfo", "give both KEY_ID:SECRET, or neither")
        endpoint = parsed.query.get("endpoint") or None
        if endpoint is not None and not re.fullmatch(r"https?://[^\s/?#]+/?", endpoint):
            raise BrokerURLError(
                shown, "query parameter 'endpoint'", "expected http(s)://host[:port]"
            )
        if parsed.query.get("dlq_retention", "").strip() in ("0", "0.0"):
            raise BrokerURLError(
                shown,
                "query parameter 'dlq_retention'",
                f"SQS keeps nothing for ever: from 60 to {FORTNIGHT:,} seconds (14 days)",
            )
        namespace = parsed.option("namespace", "")
        if namespace and not _NAMESPACE.fullmatch(namespace):
            raise BrokerURLError(
                shown, "query parameter 'namespace'", "1-24 letters, digits, '-' or '_'"
            )
        return cls(
            region=region,
            endpoint=endpoint,
            access_key=parsed.username,
            secret_key=parsed.password,
            profile=parsed.query.get("profile") or None,
            namespace=namespace,
            fifo=parsed.bool_option("fifo", False),
            visibility=_bounded(parsed, "visibility", 30, 1, MAX_VISIBILITY),
            wait=_bounded(parsed, "wait", 20, 0, 20),
            retention=_bounded(parsed, "retention", FORTNIGHT, 60, FORTNIGHT),
            dlq_retention=_bounded(parsed, "dlq_retention", FORTNIGHT, 60, FORTNIGHT),
            pollers=_bounded(parsed, "pollers", 4, 1, 64),
            shown_url=shown,
        )

    def scrub(self, text: str) -> str:
        """``text`` with the secret key masked."""
        return text.replace(self.secret_key, "***") if self.secret_key else text


def _bounded(parsed: BrokerURL, name: str, default: int, low: int, high: int) -> int:
    value = parsed.int_option(name, default, low)
    if value > high:
        raise BrokerURLError(
            str(parsed), f"query parameter {name!r}", f"must be from {low} to {high:,}"
        )
    return value
