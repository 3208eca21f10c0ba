"""``amqp://`` / ``amqps://`` — RabbitMQ through aiormq (see ``docs/amqp.md``)."""

from .broker import AMQPBroker
from .settings import AMQPSettings

__all__ = ["AMQPBroker", "AMQPSettings"]
