"""``nats://`` and ``tls://`` — NATS JetStream (see :mod:`.broker` and ``docs/nats.md``)."""

from .broker import NATSBroker
from .settings import NATSSettings

__all__ = ["NATSBroker", "NATSSettings"]
