"""Apache Kafka (and Kafka-protocol servers) through aiokafka: ``kafka://host:9092``."""

from .broker import KafkaBroker
from .settings import KafkaSettings

__all__ = ["KafkaBroker", "KafkaSettings"]
