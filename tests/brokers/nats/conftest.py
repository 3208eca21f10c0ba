"""Fixtures of the NATS adapter tests (a broker of its own namespace per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

import herald
from herald.brokers import broker_from_url
from herald.brokers.nats import NATSBroker

from .support import Relay, nats_url, require_nats


@pytest.fixture
async def broker() -> AsyncIterator[NATSBroker]:
    require_nats()
    made = broker_from_url(nats_url(ack_wait="2"))
    assert isinstance(made, NATSBroker)
    await made.connect()
    try:
        yield made
    finally:
        await made.destroy()
        await made.close()


@pytest.fixture
async def bus() -> AsyncIterator[herald.Bus]:
    """A bus of its own namespace, destroyed afterwards."""
    require_nats()
    async with herald.connect(nats_url()) as made:
        try:
            yield made
        finally:
            assert isinstance(made.broker, NATSBroker)
            await made.broker.destroy()


@pytest.fixture
async def raw() -> AsyncIterator[Client]:
    """A plain nats-py client: what another publisher (or an attacker) could send."""
    require_nats()
    client = await nats.connect("nats://127.0.0.1:4222")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    require_nats()
    made = Relay(4222)
    await made.start()
    try:
        yield made
    finally:
        await made.cut()
