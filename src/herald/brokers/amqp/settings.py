"""Settings of the ``amqp://`` broker, read from its URL, and the names it uses.

>>> s = AMQPSettings.from_url("amqp://u:p@h1,h2:5673/?namespace=t1")
>>> s.endpoints, s.vhost, s.exchange, s.dlq_retention
((('h1', 5672), ('h2', 5673)), '/', 't1.events', 1209600)
>>> s.name("payroll.employee.created"), s.name("audit.employee.*")
('t1.payroll.employee.created', 't1.audit.employee.+')
>>> s.herald_name("t1.audit.employee.+")
'audit.employee.*'
>>> AMQPSettings.from_url("amqp://h/?retain=7d").retain, s.retain
(604800.0, 0)
>>> m = AMQPSettings.from_url("amqp://u:p@h/?management=http://h:15672").management
>>> m.base, m.username
('http://h:15672', 'u')
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import SplitResult, quote, unquote, urlsplit

from yarl import URL

from ...errors import BrokerURLError
from ...url import BrokerURL, redact_url

__all__ = ["MAX_RETENTION", "OPTIONS", "AMQPSettings", "Management"]

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
    "dlq_retention",
    "management",
    "retain",
}
_QUEUE_TYPES = ("classic", "quorum")
DEFAULT_RETENTION = 14 * 24 * 3600
MAX_RETENTION = 315_360_000
"""Seconds: the longest ``x-message-ttl`` RabbitMQ accepts (ten years)."""


@dataclass(frozen=True, slots=True)
class Management:
    """Where the RabbitMQ management HTTP API is, and who to log in as."""

    base: str
    """``scheme://host:port[/prefix]``, without credentials or a trailing slash."""
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AMQPSettings:
    """Everything the adapter needs to know; ``str()`` of it never shows a password."""

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
    dlq_retention: int = DEFAULT_RETENTION
    """Seconds a dead letter is kept (``x-message-ttl`` of ``<service>.dlq``); 0: for ever."""
    management: Management | None = None
    retain: float = 0.0
    """Seconds the events stream keeps every published event (``x-max-age``), for
    backfill; 0: no stream, nothing retained."""
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    verify: bool = True

    @classmethod
    def from_url(cls, url: str | BrokerURL) -> AMQPSettings:
        parsed = url if isinstance(url, BrokerURL) else BrokerURL.parse(url)
        parsed.require_host()
        parsed.reject_unknown(OPTIONS)
        shown = _shown(parsed)
        tls = parsed.scheme == "amqps"
        default_port = 5671 if tls else 5672
        namespace = parsed.option("namespace", "")
        if namespace and not all(part for part in namespace.split(".")):
            raise BrokerURLError(shown, "query parameter 'namespace'", "empty word")
        queue_type = parsed.option("queue_type", "classic")
        if queue_type not in _QUEUE_TYPES:
            raise BrokerURLError(
                shown, "query parameter 'queue_type'", f"{queue_type!r} is not classic|quorum"
            )
        if not tls and any(name in parsed.query for name in ("cafile", "certfile", "keyfile")):
            raise BrokerURLError(shown, "scheme", "TLS options need amqps://")
        retention = parsed.int_option("dlq_retention", DEFAULT_RETENTION)
        if retention > MAX_RETENTION:
            raise BrokerURLError(
                shown,
                "query parameter 'dlq_retention'",
                f"at most {MAX_RETENTION} seconds (RabbitMQ's longest message TTL); "
                "0 keeps dead letters for ever",
            )
        username = parsed.username or "guest"
        password = parsed.password if parsed.password is not None else "guest"
        exchange = parsed.option("exchange", "events") or "events"
        return cls(
            shown_url=shown,
            endpoints=tuple((host, port or default_port) for host, port in parsed.hosts),
            username=username,
            password=password,
            vhost=parsed.path or "/",
            tls=tls,
            namespace=namespace,
            exchange=f"{namespace}.{exchange}" if namespace else exchange,
            queue_type=queue_type,
            heartbeat=parsed.int_option("heartbeat", 30),
            prefetch=parsed.int_option("prefetch", 0),
            confirm_timeout=parsed.float_option("confirm_timeout", 30.0, 0.001),
            reconnect_timeout=parsed.float_option("reconnect_timeout", 60.0),
            connect_timeout=parsed.float_option("connect_timeout", 10.0, 0.001),
            dlq_retention=retention,
            management=_management(shown, parsed.query.get("management"), username, password),
            retain=parsed.duration_option("retain", 0),
            cafile=parsed.query.get("cafile"),
            certfile=parsed.query.get("certfile"),
            keyfile=parsed.query.get("keyfile"),
            verify=parsed.bool_option("verify", True),
        )

    def __str__(self) -> str:
        return self.shown_url

    def name(self, name: str) -> str:
        """A queue name on the server: ``name`` inside the namespace, with a pattern's
        ``*`` spelled ``+`` (AMQP 0-9-1 queue names cannot hold ``*``)."""
        name = name.replace("*", "+")
        return f"{self.namespace}.{name}" if self.namespace else name

    def herald_name(self, server_name: str) -> str:
        """The inverse of :meth:`name` (for a name inside the namespace)."""
        prefix = f"{self.namespace}." if self.namespace else ""
        return server_name.removeprefix(prefix).replace("+", "*")

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

    def secrets(self) -> tuple[str, ...]:
        """The passwords that must never appear in a message or a log."""
        found = [self.password]
        if self.management is not None:
            found.append(self.management.password)
        return tuple(p for p in found if len(p) >= 2)

    def scrub(self, text: str) -> str:
        """``text`` with every password masked (driver messages may echo them)."""
        for secret in self.secrets():
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
        return text


def _shown(url: BrokerURL) -> str:
    """The URL for messages: passwords masked, the management URL's included."""
    base = redact_url(url.raw.strip().partition("?")[0].partition("#")[0])
    if not url.query:
        return base
    query = {k: redact_url(v) if k == "management" else v for k, v in url.query.items()}
    return base + "?" + "&".join(f"{k}={v}" for k, v in query.items())


def _management(shown: str, raw: str | None, username: str, password: str) -> Management | None:
    if raw is None:
        return None
    part = "query parameter 'management'"
    try:
        split: SplitResult = urlsplit(raw.strip())
        port = split.port
    except ValueError as exc:
        raise BrokerURLError(shown, part, f"not a URL: {exc}") from None
    if split.scheme not in ("http", "https") or not split.hostname:
        raise BrokerURLError(shown, part, "expected http(s)://host:port, e.g. http://host:15672")
    if split.query or split.fragment:
        raise BrokerURLError(shown, part, "takes no query or fragment")
    text = f"{split.hostname}{split.path}"
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise BrokerURLError(shown, part, "contains spaces or control characters")
    host = f"[{split.hostname}]" if ":" in split.hostname else split.hostname
    base = f"{split.scheme}://{host}{f':{port}' if port else ''}{split.path.rstrip('/')}"
    if split.username is not None:
        username = unquote(split.username)
        password = unquote(split.password or "")
    return Management(base, username, password)
