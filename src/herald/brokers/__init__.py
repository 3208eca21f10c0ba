"""Broker adapters, found by URL scheme through the ``herald.brokers`` entry-point group.

Each entry point is named after a URL scheme and points at the adapter class serving
it (a :class:`herald.Broker` subclass that lists the scheme in ``schemes``). Herald's
own adapters are declared in its ``pyproject.toml``; a third-party package adds one
the same way, and ``herald.connect("mybroker://...")`` finds it without any change to
Herald::

    [project.entry-points."herald.brokers"]
    mybroker = "my_package.broker:MyBroker [extra]"

Adapters are imported only when a URL asks for their scheme, so a missing driver
library is reported for the broker that needs it, with the extra that installs it.
Each adapter is a package of the same role modules (``broker``, ``settings``,
``wire``, ``delivery``, ``deadletters``, ``errors``, ...; see ``docs/adapters.md``).
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points

from ..broker import Broker
from ..errors import BrokerURLError, ConfigurationError
from ..url import redact_url, scheme_of

__all__ = ["GROUP", "adapter_class", "broker_from_url", "schemes"]

GROUP = "herald.brokers"
_BUILTIN = {
    "memory": "herald.brokers.memory:MemoryBroker",
    "sqlite": "herald.brokers.sqlite:SQLiteBroker",
    "amqp": "herald.brokers.amqp:AMQPBroker [amqp]",
    "amqps": "herald.brokers.amqp:AMQPBroker [amqp]",
    "nats": "herald.brokers.nats:NATSBroker [nats]",
    "tls": "herald.brokers.nats:NATSBroker [nats]",
    "redis": "herald.brokers.redis:RedisBroker [redis]",
    "rediss": "herald.brokers.redis:RedisBroker [redis]",
    "sqs": "herald.brokers.sqs:SQSBroker [sqs]",
    "kafka": "herald.brokers.kafka:KafkaBroker [kafka]",
}
"""Herald's own, for a source tree run without installed metadata."""


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {
        scheme: EntryPoint(scheme, value, GROUP) for scheme, value in _BUILTIN.items()
    }
    claimed: dict[str, str] = {}
    for point in entry_points(group=GROUP):
        scheme = point.name.lower()
        owner = point.dist.name if point.dist is not None else point.value
        if scheme in claimed and found[scheme].value != point.value:
            raise ConfigurationError(
                f"URL scheme {scheme!r} is claimed by two broker adapters: "
                f"{found[scheme].value} ({claimed[scheme]}) and {point.value} ({owner})"
            )
        claimed[scheme] = owner
        found[scheme] = point
    return found


def schemes() -> list[str]:
    """Every URL scheme an installed adapter serves."""
    return sorted(_entry_points())


def adapter_class(scheme: str, url: str = "") -> type[Broker]:
    """The adapter class serving ``scheme`` (imported now)."""
    point = _entry_points().get(scheme)
    shown = redact_url(url) if url else f"{scheme}://"
    if point is None:
        raise BrokerURLError(
            shown, "scheme", f"unknown scheme {scheme!r}; use one of {', '.join(schemes())}"
        )
    try:
        loaded = point.load()
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.startswith("herald"):
            extra = f"pip install 'herald[{point.extras[0]}]'" if point.extras else "install it"
            raise ConfigurationError(
                f"the {scheme}:// broker needs the {exc.name!r} package: {extra}"
            ) from exc
        raise
    if not (isinstance(loaded, type) and issubclass(loaded, Broker)):
        raise ConfigurationError(f"entry point {point.value} for {scheme}:// is not a Broker")
    if scheme not in loaded.schemes:
        raise ConfigurationError(
            f"{loaded.__qualname__} is registered for {scheme}:// but serves "
            f"{', '.join(loaded.schemes) or 'no scheme'}"
        )
    return loaded


def broker_from_url(url: str) -> Broker:
    """Build (but do not connect) the broker a URL names."""
    return adapter_class(scheme_of(url), url).from_url(url)
