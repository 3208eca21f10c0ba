"""``kafka://host:9092[,host2:9092]?namespace=NS&partitions=3&replication=1&...``.

>>> s = KafkaSettings.from_url("kafka://k1:9092,k2?namespace=t1&partitions=6&replication=3")
>>> s.bootstrap, s.namespace, s.partitions, s.replication, s.session_timeout
('k1:9092,k2:9092', 't1', 6, 3, 10000)
>>> KafkaSettings.from_url("kafka://k1?partitions=20000")
Traceback (most recent call last):
...
herald.errors.BrokerURLError: ... query parameter 'partitions': must be from 1 to 10,000
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import BrokerURLError
from ...url import BrokerURL

__all__ = ["DEFAULT_MAX_BYTES", "FORTNIGHT", "KafkaSettings"]

FORTNIGHT = 1_209_600
DEFAULT_MAX_BYTES = 1_000_000 - 48 * 1024
"""Apache Kafka's default ``message.max.bytes`` (1,048,588) less room for the
headers and the record batch; raise it with ``max_message_bytes`` where the
cluster's and the topics' limits were raised too."""
_OPTIONS = {
    "namespace",
    "partitions",
    "replication",
    "session_timeout",
    "metadata_age",
    "dlq_retention",
    "max_message_bytes",
    "idempotent",
    "client_id",
    "ack_commits",
    "fetch_wait",
}
_NAMESPACE = re.compile(r"[A-Za-z0-9_-]{1,24}")


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Where the cluster is and how the broker uses it.

    partitions:         partitions of each topic Herald creates (ordering holds per key).
    replication:        replication factor of each topic Herald creates.
    session_timeout:    milliseconds a group member may go silent before the group
                        rebalances without it (heartbeats every third of it).
    metadata_age:       milliseconds between metadata refreshes: how soon a pattern
                        subscription sees a topic created after it started.
    dlq_retention:      seconds dead letters are kept (0: for ever).
    max_message_bytes:  the largest body accepted.
    idempotent:         the idempotent producer (needs ``InitProducerId`` on the server).
    fetch_wait:         milliseconds a fetch waits for records when there are none (a
                        server that does not answer a waiting fetch when records
                        arrive, as Tansu, adds up to this much to each hop).
    ack_commits:        an ack returns once the commit that follows it is done (True:
                        a handler slot waits a commit round trip per delivery), or at
                        once, the offset committed with a round that follows within
                        0.1 s or half a prefetch of settlements (False, the default: a
                        crash redelivers at most about a prefetch of acked deliveries).
    """

    hosts: tuple[tuple[str, int], ...] = (("127.0.0.1", 9092),)
    namespace: str = ""
    partitions: int = 3
    replication: int = 1
    session_timeout: int = 10_000
    metadata_age: int = 2_000
    dlq_retention: int = FORTNIGHT
    max_message_bytes: int = DEFAULT_MAX_BYTES
    idempotent: bool = False
    client_id: str = "herald"
    ack_commits: bool = False
    fetch_wait: int = 100
    shown_url: str = ""

    def __post_init__(self) -> None:
        if not self.shown_url:
            object.__setattr__(self, "shown_url", f"kafka://{self.bootstrap}")

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in self.hosts)

    @classmethod
    def from_url(cls, url: str) -> KafkaSettings:
        """Settings from a ``kafka://`` URL; :class:`herald.BrokerURLError` names the
        part that is wrong."""
        parsed = BrokerURL.parse(url)
        shown = str(parsed)
        if parsed.scheme != "kafka":
            raise BrokerURLError(shown, "scheme", "expected kafka://")
        parsed.require_host()
        parsed.reject_unknown(_OPTIONS)
        if parsed.username is not None or parsed.password is not None:
            raise BrokerURLError(shown, "userinfo", "kafka:// takes no credentials (no SASL yet)")
        if parsed.path.strip("/"):
            raise BrokerURLError(shown, "path", "kafka:// takes no path")
        namespace = parsed.option("namespace", "")
        if namespace and not _NAMESPACE.fullmatch(namespace):
            raise BrokerURLError(
                shown, "query parameter 'namespace'", "1-24 letters, digits, '-' or '_'"
            )
        client_id = parsed.option("client_id", "herald")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", client_id):
            raise BrokerURLError(
                shown, "query parameter 'client_id'", "1-64 letters, digits, '.', '-' or '_'"
            )
        session = _bounded(parsed, "session_timeout", 10_000, 500, 3_600_000)
        return cls(
            hosts=tuple((host, port or 9092) for host, port in parsed.hosts),
            namespace=namespace,
            partitions=_bounded(parsed, "partitions", 3, 1, 10_000),
            replication=_bounded(parsed, "replication", 1, 1, 32),
            session_timeout=session,
            metadata_age=_bounded(parsed, "metadata_age", 2_000, 100, 3_600_000),
            dlq_retention=_bounded(parsed, "dlq_retention", FORTNIGHT, 0, 10 * 365 * 86_400),
            max_message_bytes=_bounded(
                parsed, "max_message_bytes", DEFAULT_MAX_BYTES, 1024, 256 * 1024 * 1024
            ),
            idempotent=parsed.bool_option("idempotent", False),
            client_id=client_id,
            ack_commits=parsed.bool_option("ack_commits", False),
            fetch_wait=_bounded(parsed, "fetch_wait", 100, 1, 10_000),
            shown_url=shown,
        )


def _bounded(parsed: BrokerURL, name: str, default: int, low: int, high: int) -> int:
    value = parsed.int_option(name, default, low)
    if not low <= value <= high:
        raise BrokerURLError(
            str(parsed), f"query parameter {name!r}", f"must be from {low} to {high:,}"
        )
    return value
