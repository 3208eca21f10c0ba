"""Settings of the ``nats://`` broker, read from its URL.

>>> s = NATSSettings.from_url("nats://u:s3cret@h1,h2:4223/?namespace=t1&ack_wait=5")
>>> s.servers, s.names.streams.events, s.ack_wait, s.tls, s.dlq_retention
(['nats://h1:4222', 'nats://h2:4223'], 't1_EVENTS', 5.0, False, 1209600.0)
>>> NATSSettings.from_url("nats://h1:4222,h2:4223,h3:4224/?replicas=3").replicas
3
>>> "s3cret" in repr(s) or "s3cret" in s.shown_url
False
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from ...errors import BrokerURLError, ConfigurationError
from ...url import BrokerURL
from .topology import Names

__all__ = ["OPTIONS", "NATSSettings"]

OPTIONS = {
    "namespace",
    "stream",
    "retention",
    "max_age",
    "ack_wait",
    "max_deliver",
    "timeout",
    "cafile",
    "dlq_retention",
    "replicas",
    "heartbeat",
}
RETENTIONS = ("limits", "interest")
WEEK = 7 * 24 * 3600.0
FORTNIGHT = 14 * 24 * 3600.0
DEFAULT_PORT = 4222
MAX_REPLICAS = 5


@dataclass(frozen=True, slots=True)
class NATSSettings:
    """Everything the adapter needs; ``repr()`` never shows the password."""

    shown_url: str
    servers: list[str]
    user: str | None
    password: str | None = field(repr=False)
    tls: bool
    names: Names
    retention: str
    max_age: float
    ack_wait: float
    max_deliver: int
    timeout: float
    dlq_retention: float
    """Seconds a dead letter is kept (the dead-letter stream's ``max_age``); 0: for ever."""
    cafile: str | None = None
    replicas: int = 1
    heartbeat: float = 10.0
    """Seconds between the client's pings; a connection that leaves three unanswered
    (two outstanding when the third is due) is dropped and reconnected."""
    """Copies JetStream keeps of each stream, consumer and bucket Herald creates (a cluster)."""

    @classmethod
    def from_url(cls, raw: str) -> NATSSettings:
        url = BrokerURL.parse(raw)
        url.require_host()
        url.reject_unknown(OPTIONS)
        tls = url.scheme == "tls"
        scheme = "tls" if tls else "nats"
        servers = [f"{scheme}://{_host(host)}:{port or DEFAULT_PORT}" for host, port in url.hosts]
        try:
            names = Names(url.option("namespace", ""), url.query.get("stream") or None)
        except ConfigurationError as exc:
            raise BrokerURLError(
                str(url), "query parameter 'namespace'/'stream'", str(exc)
            ) from None
        max_deliver = url.int_option("max_deliver", 0)
        replicas = url.int_option("replicas", 1)
        if not 1 <= replicas <= MAX_REPLICAS:
            raise BrokerURLError(
                str(url),
                "query parameter 'replicas'",
                f"use 1 to {MAX_REPLICAS} (JetStream's range)",
            )
        retention = url.option("retention", "limits")
        if retention not in RETENTIONS:
            raise BrokerURLError(
                str(url), "query parameter 'retention'", f"use one of {', '.join(RETENTIONS)}"
            )
        return cls(
            shown_url=str(url),
            servers=servers,
            user=url.username,
            password=url.password,
            tls=tls,
            names=names,
            retention=retention,
            max_age=url.float_option("max_age", WEEK if retention == "limits" else 0.0),
            ack_wait=url.float_option("ack_wait", 30.0, minimum=0.5),
            max_deliver=max_deliver if max_deliver > 0 else -1,
            timeout=url.float_option("timeout", 10.0, minimum=0.1),
            dlq_retention=url.float_option("dlq_retention", FORTNIGHT),
            cafile=url.query.get("cafile") or None,
            replicas=replicas,
            heartbeat=url.float_option("heartbeat", 10.0, minimum=0.5),
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.cafile)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
