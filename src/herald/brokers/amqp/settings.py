"""Settings of the ``amqp://`` broker, read from its URL, and the names it uses.

>>> s = AMQPSettings.from_url(BrokerURL.parse("amqp://u:p@h1,h2:5673/?namespace=t1"))
>>> s.endpoints, s.vhost, s.exchange
((('h1', 5672), ('h2', 5673)), '/', 't1.events')
>>> s.name("payroll.employee.created"), s.name("audit.employee.*")
('t1.payroll.employee.created', 't1.audit.employee.+')
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import quote

from yarl import URL

from ..errors import BrokerURLError
from ..url import BrokerURL

__all__ = ["OPTIONS", "AMQPSettings"]

OPTIONS = {
    "namespace",
    "exchange",
    "queue_type",
    "heartbeat",
    "prefetch",
    "confirm_timeout",
    "reconnect_timeout",
    "connect_timeout",
    "cafile",
    "certfile",
    "keyfile",
    "verify",
}
_QUEUE_TYPES = ("classic", "quorum")


@dataclass(frozen=True, slots=True)
class AMQPSettings:
    """Everything the adapter needs to know; ``str()`` of it never shows the password."""

    shown_url: str
    endpoints: tuple[tuple[str, int], ...]
    username: str
    password: str = field(repr=False)
    vhost: str
    tls: bool
    namespace: str
    exchange: str
    queue_type: str
    heartbeat: int
    prefetch: int
    confirm_timeout: float
    reconnect_timeout: float
    connect_timeout: float
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    verify: bool = True

    @classmethod
    def from_url(cls, url: BrokerURL) -> AMQPSettings:
        url.reject_unknown(OPTIONS)
        tls = url.scheme == "amqps"
        default_port = 5671 if tls else 5672
        namespace = url.option("namespace", "")
        if namespace and not all(part for part in namespace.split(".")):
            raise BrokerURLError(str(url), "query parameter 'namespace'", "empty word")
        queue_type = url.option("queue_type", "classic")
        if queue_type not in _QUEUE_TYPES:
            raise BrokerURLError(
                str(url), "query parameter 'queue_type'", f"{queue_type!r} is not classic|quorum"
            )
        if not tls and any(name in url.query for name in ("cafile", "certfile", "keyfile")):
            raise BrokerURLError(str(url), "scheme", "TLS options need amqps://")
        exchange = url.option("exchange", "events") or "events"
        return cls(
            shown_url=str(url),
            endpoints=tuple((host, port or default_port) for host, port in url.hosts),
            username=url.username or "guest",
            password=url.password if url.password is not None else "guest",
            vhost=url.path or "/",
            tls=tls,
            namespace=namespace,
            exchange=f"{namespace}.{exchange}" if namespace else exchange,
            queue_type=queue_type,
            heartbeat=url.int_option("heartbeat", 30),
            prefetch=url.int_option("prefetch", 0),
            confirm_timeout=url.float_option("confirm_timeout", 30.0, 0.001),
            reconnect_timeout=url.float_option("reconnect_timeout", 60.0),
            connect_timeout=url.float_option("connect_timeout", 10.0, 0.001),
            cafile=url.query.get("cafile"),
            certfile=url.query.get("certfile"),
            keyfile=url.query.get("keyfile"),
            verify=url.bool_option("verify", True),
        )

    def __str__(self) -> str:
        return self.shown_url

    def name(self, name: str) -> str:
        """A queue name on the server: ``name`` inside the namespace, with a pattern's
        ``*`` spelled ``+`` (AMQP 0-9-1 queue names cannot hold ``*``)."""
        name = name.replace("*", "+")
        return f"{self.namespace}.{name}" if self.namespace else name

    def driver_url(self, host: str, port: int) -> URL:
        """The aiormq URL of one endpoint (credentials included: never log it)."""
        return URL.build(
            scheme="amqps" if self.tls else "amqp",
            user=self.username,
            password=self.password,
            host=host,
            port=port,
            path="/" if self.vhost == "/" else "/" + self.vhost,
            query={"heartbeat": str(self.heartbeat)},
            encoded=False,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.cafile)
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def scrub(self, text: str) -> str:
        """``text`` with the password masked (for driver messages that may echo it)."""
        if self.password and len(self.password) >= 2:
            text = text.replace(self.password, "***")
            text = text.replace(quote(self.password, safe=""), "***")
        return text
