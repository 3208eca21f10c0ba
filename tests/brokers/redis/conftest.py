"""Fixtures of the Redis tests: isolated namespaces on the shared server (never
stopped, never flushed) and private servers for everything that stops one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio

from herald.brokers import broker_from_url
from herald.brokers.redis import RedisBroker

from ...servers import SPECS
from .server import RedisServer, private_server

SHARED = next(spec for spec in SPECS if spec.scheme == "redis")


def shared_url(namespace: str, **options: object) -> str:
    query = "".join(f"&{k}={v}" for k, v in options.items())
    return f"redis://127.0.0.1:6379/0?namespace={namespace}{query}"


def redis_broker(url: str) -> RedisBroker:
    broker = broker_from_url(url)
    assert isinstance(broker, RedisBroker)
    return broker


def raw_client(port: int = 6379) -> redis.asyncio.Redis:
    """A plain redis-py client, for writing what another program would (``async with``)."""
    return redis.asyncio.Redis(port=port)


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    """A fresh namespace on the shared server, destroyed afterwards even if the test failed."""
    SHARED.require()
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    async with redis_broker(shared_url(name)) as broker:
        await broker.destroy()


@pytest.fixture
async def broker(namespace: str) -> AsyncIterator[RedisBroker]:
    async with redis_broker(shared_url(namespace, lease=0.5, block=0.05)) as b:
        yield b


@pytest.fixture
def durable_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server with ``appendonly yes, appendfsync always``."""
    yield from private_server(tmp_path, durable=True)


@pytest.fixture
def volatile_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server that keeps nothing on disk (like the shared one)."""
    yield from private_server(tmp_path, durable=False)
