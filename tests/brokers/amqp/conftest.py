"""Fixtures of the RabbitMQ tests: each test works in its own ``namespace=``.

They need RabbitMQ on 127.0.0.1:5672 (guest/guest), and its management API on
15672 for the tests that read it: they fail when CI=true and it is missing, and
skip otherwise.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiormq
import pytest
from aiormq.abc import AbstractConnection

from herald.brokers import broker_from_url
from herald.brokers.amqp import AMQPBroker

from .support import SERVER, require_server


@pytest.fixture
def namespace() -> str:
    return f"ta{uuid.uuid4().hex[:10]}"


@pytest.fixture
def url(namespace: str) -> str:
    require_server()
    return f"{SERVER}?namespace={namespace}&reconnect_timeout=30"


async def destroy(url: str) -> None:
    cleaner = broker_from_url(url)
    try:
        await cleaner.connect()
        await cleaner.destroy()
    finally:
        await cleaner.close()


@pytest.fixture
async def broker(url: str) -> AsyncIterator[AMQPBroker]:
    broker = broker_from_url(url)
    assert isinstance(broker, AMQPBroker)
    await broker.connect()
    try:
        yield broker
    finally:
        try:
            await destroy(url)
        finally:
            await broker.close()


@pytest.fixture
async def raw() -> AsyncIterator[AbstractConnection]:
    require_server()
    connection = await aiormq.connect(SERVER)
    try:
        yield connection
    finally:
        await connection.close()
