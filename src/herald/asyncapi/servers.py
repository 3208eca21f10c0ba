"""The ``servers`` entry of a document, from a broker URL.

Only where the broker is goes in: the scheme's protocol, the host and port, the
path (an AMQP virtual host, a SQLite file). Credentials and query parameters
(certificate paths, endpoints, profiles) stay out.

>>> server = Server.of("amqp://guest:s3cret@rabbit.internal:5672/hr?exchange=hr-events")
>>> server.entries()
{'broker': {'host': 'rabbit.internal:5672', 'protocol': 'amqp', 'pathname': '/hr', \
'description': 'RabbitMQ (AMQP 0-9-1), virtual host hr'}}
>>> server.exchange, server.vhost
('hr-events', 'hr')
>>> Server.of("sqlite:///./var/herald.db").entries()["broker"]["host"]
'localhost'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..url import BrokerURL

__all__ = ["Server"]

# scheme -> (AsyncAPI protocol, what it is)
_PROTOCOLS: dict[str, tuple[str, str]] = {
    "amqp": ("amqp", "RabbitMQ (AMQP 0-9-1)"),
    "amqps": ("amqps", "RabbitMQ (AMQP 0-9-1 over TLS)"),
    "nats": ("nats", "NATS JetStream"),
    "tls": ("nats", "NATS JetStream over TLS"),
    "redis": ("redis", "Redis Streams"),
    "rediss": ("redis", "Redis Streams over TLS"),
    "sqs": ("sqs", "Amazon SQS, with SNS for fan-out"),
    "kafka": ("kafka", "Apache Kafka"),
    "sqlite": ("sqlite", "Herald's embedded broker: a SQLite file shared by processes"),
    "memory": ("memory", "Herald's in-process broker"),
}


@dataclass(frozen=True, slots=True)
class Server:
    """Where the services meet: the document's servers, and the AMQP names the
    channel bindings need (exchange, virtual host, namespace prefix)."""

    protocol: str
    description: str
    hosts: tuple[str, ...]
    pathname: str
    exchange: str = "events"
    vhost: str = "/"
    namespace: str = ""

    @classmethod
    def of(cls, url: str) -> Server:
        """The server of broker ``url`` (a :class:`herald.BrokerURLError` if malformed)."""
        parsed = BrokerURL.parse(url)
        protocol, description = _PROTOCOLS.get(
            parsed.scheme, (parsed.scheme, f"a {parsed.scheme}:// broker")
        )
        hosts = tuple(
            f"{host}:{port}" if port is not None else host for host, port in parsed.hosts if host
        )
        pathname = "/" + parsed.path if parsed.path else ""
        if protocol not in ("amqp", "amqps"):
            return cls(protocol, description, hosts or ("localhost",), pathname)
        vhost = parsed.path or "/"
        if parsed.path:
            description += f", virtual host {vhost}"
        namespace = parsed.query.get("namespace", "")
        exchange = parsed.query.get("exchange") or "events"
        return cls(
            protocol,
            description,
            hosts or ("localhost",),
            pathname,
            f"{namespace}.{exchange}" if namespace else exchange,
            vhost,
            namespace,
        )

    @property
    def is_amqp(self) -> bool:
        return self.protocol in ("amqp", "amqps")

    def queue(self, name: str) -> str:
        """The broker's name of queue ``name`` (AMQP prefixes the namespace)."""
        return f"{self.namespace}.{name}" if self.namespace and self.is_amqp else name

    def entries(self) -> dict[str, dict[str, Any]]:
        """The document's ``servers``: ``broker``, then ``broker-2``... for a cluster."""
        result: dict[str, dict[str, Any]] = {}
        for index, host in enumerate(self.hosts, start=1):
            entry: dict[str, Any] = {"host": host, "protocol": self.protocol}
            if self.pathname:
                entry["pathname"] = self.pathname
            entry["description"] = self.description
            result["broker" if index == 1 else f"broker-{index}"] = entry
        return result
