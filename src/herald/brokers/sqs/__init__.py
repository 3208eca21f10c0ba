"""``sqs://REGION`` — Amazon SQS, with SNS for fan-out (see docs/sqs.md)."""

from .broker import SQSBroker
from .settings import SQSSettings

__all__ = ["SQSBroker", "SQSSettings"]
