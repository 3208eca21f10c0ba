"""The attribute names and values of OpenTelemetry's messaging semantic conventions
(status "Development"; the current names, not the deprecated ones of v1.24 and
before), and the ``messaging.system`` of each Herald broker.

>>> messaging_system("amqp://guest:guest@localhost/"), messaging_system("sqs://x")
('rabbitmq', 'aws_sqs')
>>> messaging_system("sqlite:///var/herald.db")
'herald.sqlite'
"""

from __future__ import annotations

__all__ = [
    "BATCH_MESSAGE_COUNT",
    "CONSUMER_GROUP",
    "CONVERSATION_ID",
    "DESTINATION",
    "DESTINATION_TEMPLATE",
    "ERROR_TYPE",
    "MESSAGE_BODY_SIZE",
    "MESSAGE_ID",
    "OPERATION_NAME",
    "OPERATION_TYPE",
    "OUTCOME",
    "SUBSCRIPTION",
    "SYSTEM",
    "messaging_system",
]

SYSTEM = "messaging.system"
OPERATION_TYPE = "messaging.operation.type"
"""``create``, ``send``, ``process`` or ``settle``."""
OPERATION_NAME = "messaging.operation.name"
DESTINATION = "messaging.destination.name"
"""The event type: Herald's topic (AMQP routing key, NATS subject, ...)."""
DESTINATION_TEMPLATE = "messaging.destination.template"
SUBSCRIPTION = "messaging.destination.subscription.name"
"""The queue, ``<service>.<name>``."""
CONSUMER_GROUP = "messaging.consumer.group.name"
"""The service: its processes share its queues."""
MESSAGE_ID = "messaging.message.id"
CONVERSATION_ID = "messaging.message.conversation_id"
MESSAGE_BODY_SIZE = "messaging.message.body.size"
BATCH_MESSAGE_COUNT = "messaging.batch.message_count"
ERROR_TYPE = "error.type"
OUTCOME = "herald.outcome"
"""``acked``, ``retried``, ``released`` or ``dead-lettered`` (Herald's own)."""

_SYSTEMS = {
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "nats": "nats",
    "tls": "nats",
    "redis": "redis",
    "rediss": "redis",
    "sqs": "aws_sqs",
    "kafka": "kafka",
}


def messaging_system(url: str) -> str:
    """``messaging.system`` for a broker URL: the conventions' well-known value where
    there is one (``rabbitmq``, ``aws_sqs``, ``kafka``), else the server's name, else
    ``herald.<scheme>`` for Herald's own brokers (``memory``, ``sqlite``)."""
    scheme = url.partition("://")[0].lower()
    return _SYSTEMS.get(scheme, f"herald.{scheme or 'unknown'}")
