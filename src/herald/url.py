"""Broker URLs: where a bus connects, validated part by part.

>>> u = BrokerURL.parse("amqp://guest:secret@h1:5672,h2/vhost?exchange=events")
>>> u.scheme, u.hosts, u.path, u.query["exchange"]
('amqp', (('h1', 5672), ('h2', None)), 'vhost', 'events')
>>> str(u)
'amqp://guest:***@h1:5672,h2/vhost?exchange=events'
>>> BrokerURL.parse("sqlite:///var/herald.db").path
'var/herald.db'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from .errors import BrokerURLError

__all__ = ["DEFAULT_URL", "SCHEMES", "BrokerURL", "redact_url", "resolve_url"]

DEFAULT_URL = "sqlite:///./var/herald.db"
SCHEMES = ("memory", "sqlite", "amqp", "amqps", "nats", "tls", "redis", "rediss")
_SERVER_SCHEMES = ("amqp", "amqps", "nats", "tls", "redis", "rediss")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*)$", re.DOTALL)


def resolve_url(url: str | None = None) -> str:
    """The URL given, else ``$HERALD_BROKER``, else the embedded SQLite default."""
    return url or os.environ.get("HERALD_BROKER") or DEFAULT_URL


def redact_url(url: str) -> str:
    """Replace the password in ``url`` with ``***`` (works on malformed URLs too)."""
    return re.sub(r"(://[^:/@?#]*:)[^@/?#]*@", r"\1***@", url)


@dataclass(frozen=True, slots=True)
class BrokerURL:
    """A parsed broker URL. ``str()`` gives it with the password redacted."""

    raw: str = field(repr=False)
    scheme: str
    username: str | None
    password: str | None = field(repr=False)
    hosts: tuple[tuple[str, int | None], ...]
    path: str
    query: dict[str, str]

    def __str__(self) -> str:
        return redact_url(self.raw)

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        shown = redact_url(url)
        match = _URL.match(url.strip())
        if not match:
            raise BrokerURLError(
                shown, "scheme", "expected SCHEME://..., e.g. sqlite:///var/herald.db"
            )
        scheme = match["scheme"].lower()
        if scheme not in SCHEMES:
            raise BrokerURLError(
                shown, "scheme", f"unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)}"
            )
        rest = match["rest"]
        rest = rest.partition("#")[0]
        rest, _, raw_query = rest.partition("?")
        try:
            query = dict(
                parse_qsl(raw_query, keep_blank_values=True, strict_parsing=bool(raw_query))
            )
        except ValueError as exc:
            raise BrokerURLError(shown, "query", f"cannot parse {raw_query!r}: {exc}") from None
        if scheme == "sqlite":
            path = unquote(rest.removeprefix("/")) if rest.startswith("/") else unquote(rest)
            if not path:
                raise BrokerURLError(
                    shown, "path", "sqlite needs a file, e.g. sqlite:///var/herald.db"
                )
            return cls(url, scheme, None, None, (), path, query)
        netloc, _, path = rest.partition("/")
        username = password = None
        if "@" in netloc:
            userinfo, _, netloc = netloc.rpartition("@")
            user, sep, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if sep else None
        hosts = tuple(_parse_host(shown, part) for part in netloc.split(",")) if netloc else ()
        if scheme in _SERVER_SCHEMES and not hosts:
            raise BrokerURLError(shown, "host", f"{scheme} needs a host, e.g. {scheme}://127.0.0.1")
        return cls(url, scheme, username, password, hosts, unquote(path), query)

    def option(self, name: str, default: str) -> str:
        return self.query.get(name, default)

    def int_option(self, name: str, default: int, minimum: int = 0) -> int:
        return int(self.float_option(name, default, minimum, integer=True))

    def float_option(
        self, name: str, default: float, minimum: float = 0.0, *, integer: bool = False
    ) -> float:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise BrokerURLError(
                str(self), f"query parameter {name!r}", f"{raw!r} is not {kind}"
            ) from None
        if value < minimum:
            raise BrokerURLError(str(self), f"query parameter {name!r}", f"must be >= {minimum}")
        return value

    def bool_option(self, name: str, default: bool) -> bool:
        raw = self.query.get(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise BrokerURLError(str(self), f"query parameter {name!r}", f"{raw!r} is not a boolean")

    def reject_unknown(self, known: set[str]) -> None:
        """Raise for query parameters the broker does not understand (typos lose settings)."""
        for name in self.query:
            if name not in known:
                raise BrokerURLError(
                    str(self),
                    f"query parameter {name!r}",
                    f"unknown for {self.scheme}://; known: {', '.join(sorted(known)) or 'none'}",
                )


def _parse_host(shown: str, part: str) -> tuple[str, int | None]:
    part = part.strip()
    if part.startswith("["):
        host, _, after = part[1:].partition("]")
        port_text = after.removeprefix(":") if after else ""
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise BrokerURLError(shown, "host", f"empty host in {part!r}")
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BrokerURLError(shown, "port", f"{port_text!r} is not a port number (1-65535)")
    return host, int(port_text)
