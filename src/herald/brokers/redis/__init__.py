"""``redis://`` and ``rediss://`` — Redis Streams (see docs/redis.md)."""

from .broker import RedisBroker
from .settings import RedisSettings

__all__ = ["RedisBroker", "RedisSettings"]
