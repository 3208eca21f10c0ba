"""Broker URLs: where a bus connects, validated part by part.

The generic syntax is parsed here; which scheme means which adapter, and what each
adapter requires of the rest (a host, a path, its query parameters), is the
adapter's own business (:meth:`herald.Broker.from_url`).

>>> u = BrokerURL.parse("amqp://guest:secret@h1:5672,h2/vhost?exchange=events")
>>> u.scheme, u.hosts, u.path, u.query["exchange"]
('amqp', (('h1', 5672), ('h2', None)), 'vhost', 'events')
>>> str(u)
'amqp://guest:***@h1:5672,h2/vhost?exchange=events'
>>> BrokerURL.parse("sqlite:///var/herald.db").path
'var/herald.db'

A password is never shown, even one with characters a URL should have escaped:

>>> redact_url("amqp://guest:pa/ss@word@host/vhost")
'amqp://guest:***@host/vhost'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from .errors import BrokerURLError

__all__ = ["DEFAULT_URL", "BrokerURL", "redact_url", "resolve_url", "scheme_of"]

DEFAULT_URL = "sqlite:///./var/herald.db"
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*)$", re.DOTALL)
_AUTHORITY_END = re.compile(r"[/?#]")


def resolve_url(url: str | None = None) -> str:
    """The URL given, else ``$HERALD_BROKER``, else the embedded SQLite default."""
    return url or os.environ.get("HERALD_BROKER") or DEFAULT_URL


def _userinfo_end(rest: str, *, widest: bool = False) -> int:
    """Where the userinfo of ``rest`` (the URL after ``scheme://``) ends: the index of
    its ``@``, or -1.

    The standard end is the last ``@`` before the first ``/ ? #``. A password with an
    unescaped ``/ ? #`` hides that ``@`` further on: when ``rest`` starts like
    ``user:secret`` (not ``host:port``) and an ``@`` follows, that one counts, so the
    password is refused with a clear error instead of being taken for a host.
    ``widest`` takes the last ``@`` of all whenever there may be userinfo (even
    ``host:5672/...@`` could be ``user:5672/...@``): the safe choice for redaction,
    where showing too little beats showing a secret.
    """
    authority_end = _AUTHORITY_END.search(rest)
    authority = rest if authority_end is None else rest[: authority_end.start()]
    at_last = rest.rfind("@")
    at = authority.rfind("@")
    if at < 0:
        colon = rest.find(":")
        looks_like_user = 0 < colon < at_last and not _AUTHORITY_END.search(rest[:colon])
        after = rest[colon + 1 :]
        port = _AUTHORITY_END.split(after, maxsplit=1)[0]
        if not looks_like_user or (not widest and port.isascii() and port.isdigit()):
            return -1
        return at_last
    return at_last if widest else at


def redact_url(url: str) -> str:
    """``url`` with the password replaced by ``***`` (works on malformed URLs too)."""
    match = _URL.match(url.strip())
    if not match:
        return re.sub(r"(://[^:/@?#]*:)[^@]*@", r"\1***@", url)
    rest = match["rest"]
    at = _userinfo_end(rest, widest=True)
    if at < 0 or ":" not in rest[:at]:
        return url.strip()
    user = rest[: rest.index(":")]
    return f"{match['scheme']}://{user}:***@{rest[at + 1 :]}"


def scheme_of(url: str) -> str:
    """The lower-cased scheme of ``url``; raises :class:`BrokerURLError` naming it."""
    match = _URL.match(url.strip())
    if not match:
        raise BrokerURLError(
            redact_url(url), "scheme", "expected SCHEME://..., e.g. sqlite:///var/herald.db"
        )
    return match["scheme"].lower()


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

    def __repr__(self) -> str:
        return f"BrokerURL({str(self)!r})"

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        shown = redact_url(url)
        scheme = scheme_of(url)
        rest = url.strip().split("://", 1)[1]
        username = password = None
        at = _userinfo_end(rest)
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            user, sep, secret = userinfo.partition(":")
            for part, text in (("username", user), ("password", secret)):
                bad = sorted(set(text) & set("/?#@"))
                if bad:
                    raise BrokerURLError(
                        shown,
                        part,
                        f"contains {' '.join(bad)} unescaped; percent-encode it "
                        "(/ as %2F, ? as %3F, # as %23, @ as %40)",
                    )
            username = unquote(user) or None
            password = unquote(secret) if sep else None
        rest = rest.partition("#")[0]
        rest, _, raw_query = rest.partition("?")
        try:
            query = dict(
                parse_qsl(raw_query, keep_blank_values=True, strict_parsing=bool(raw_query))
            )
        except ValueError as exc:
            raise BrokerURLError(shown, "query", f"cannot parse {raw_query!r}: {exc}") from None
        netloc, _, path = rest.partition("/")
        hosts = tuple(_parse_host(shown, part) for part in netloc.split(",")) if netloc else ()
        return cls(url, scheme, username, password, hosts, unquote(path), query)

    def require_host(self) -> None:
        """Raise unless the URL names at least one host (server brokers)."""
        if not self.hosts:
            raise BrokerURLError(
                str(self), "host", f"{self.scheme} needs a host, e.g. {self.scheme}://127.0.0.1"
            )

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
                str(self), f"query parameter {name!r}", f"{raw[:40]!r} is not {kind}"
            ) from None
        if not value >= minimum or value in (float("inf"), float("-inf")):
            raise BrokerURLError(
                str(self), f"query parameter {name!r}", f"must be a finite number >= {minimum}"
            )
        return value

    def duration_option(self, name: str, default: float) -> float:
        """Seconds, written as a number of seconds or with a unit: ``90``, ``45s``,
        ``30m``, ``12h``, ``7d``.

        >>> url = BrokerURL.parse("sqlite:///h.db?retain=7d&bad=7w")
        >>> url.duration_option("retain", 0), url.duration_option("other", 60)
        (604800.0, 60)
        >>> url.duration_option("bad", 0)
        Traceback (most recent call last):
        ...
        herald.errors.BrokerURLError: invalid broker URL 'sqlite:///h.db?retain=7d&bad=7w': \
query parameter 'bad': '7w' is not a duration (seconds, or a number with s, m, h or d)
        """
        raw = self.query.get(name)
        if raw is None:
            return default
        number, unit = (raw[:-1], raw[-1].lower()) if raw[-1:].isalpha() else (raw, "s")
        try:
            value = float(number) * _UNITS[unit]
        except (KeyError, ValueError):
            raise BrokerURLError(
                str(self),
                f"query parameter {name!r}",
                f"{raw[:40]!r} is not a duration (seconds, or a number with s, m, h or d)",
            ) from None
        if not 0 <= value < float("inf"):
            raise BrokerURLError(str(self), f"query parameter {name!r}", "must be finite and >= 0")
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
        raise BrokerURLError(
            str(self), f"query parameter {name!r}", f"{raw[:40]!r} is not a boolean"
        )

    def reject_unknown(self, known: set[str]) -> None:
        """Raise for query parameters the broker does not understand (typos lose settings)."""
        for name in self.query:
            if name not in known:
                raise BrokerURLError(
                    str(self),
                    f"query parameter {name[:40]!r}",
                    f"unknown for {self.scheme}://; known: {', '.join(sorted(known)) or 'none'}",
                )


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def _parse_host(shown: str, part: str) -> tuple[str, int | None]:
    part = part.strip()
    if part.startswith("["):
        host, _, after = part[1:].partition("]")
        port_text = after.removeprefix(":") if after else ""
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise BrokerURLError(shown, "host", f"empty host in {part[:100]!r}")
    if any(c.isspace() or ord(c) < 32 for c in host):
        raise BrokerURLError(shown, "host", f"{host[:100]!r} contains spaces or control characters")
    if not port_text:
        return host, None
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise BrokerURLError(shown, "port", f"{port_text[:20]!r} is not a port number (1-65535)")
    return host, int(port_text)
