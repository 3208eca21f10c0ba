"""Broker adapters, one module each, chosen by URL scheme and imported on demand."""

from __future__ import annotations

import importlib

from ..broker import Broker
from ..errors import BrokerURLError, ConfigurationError
from ..url import BrokerURL

__all__ = ["broker_from_url"]

_ADAPTERS = {
    "memory": ("memory", "MemoryBroker", None),
    "sqlite": ("sqlite", "SQLiteBroker", None),
    "amqp": ("amqp", "AMQPBroker", "aio-pika"),
    "amqps": ("amqp", "AMQPBroker", "aio-pika"),
    "nats": ("nats", "NATSBroker", "nats-py"),
    "tls": ("nats", "NATSBroker", "nats-py"),
    "redis": ("redis", "RedisBroker", "redis"),
    "rediss": ("redis", "RedisBroker", "redis"),
}


def broker_from_url(url: str) -> Broker:
    """Build (but do not connect) the broker a URL names."""
    parsed = BrokerURL.parse(url)
    module_name, class_name, package = _ADAPTERS[parsed.scheme]
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as exc:
        if package and exc.name and not exc.name.startswith("herald"):
            raise ConfigurationError(
                f"the {parsed.scheme}:// broker needs the {package!r} package: "
                f"pip install 'herald[{module_name}]'"
            ) from exc
        raise BrokerURLError(
            str(parsed), "scheme", f"no adapter for {parsed.scheme!r} yet"
        ) from exc
    broker: Broker = getattr(module, class_name).from_url(parsed)
    return broker
