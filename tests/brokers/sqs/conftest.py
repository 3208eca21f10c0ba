"""Fixtures of the SQS tests: moto started by the tests on a loopback port, a fresh
namespace per test (destroyed afterwards), brokers on it, raw clients beside them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.session import get_session

from herald.brokers import broker_from_url
from herald.brokers.sqs import SQSBroker

from .server import shared_endpoint, sqs_url


def sqs_broker(url: str) -> SQSBroker:
    broker = broker_from_url(url)
    assert isinstance(broker, SQSBroker)
    return broker


@pytest.fixture
def endpoint() -> str:
    return shared_endpoint()


@pytest.fixture
async def namespace(endpoint: str) -> AsyncIterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    async with sqs_broker(sqs_url(name, endpoint)) as broker:
        await broker.destroy()


@pytest.fixture
def url(namespace: str, endpoint: str) -> str:
    return sqs_url(namespace, endpoint)


@pytest.fixture
async def broker(url: str) -> AsyncIterator[SQSBroker]:
    async with sqs_broker(url) as connected:
        yield connected


@pytest.fixture
async def raw_sqs(endpoint: str) -> AsyncIterator[Any]:
    """A plain aiobotocore SQS client, for what another program would do."""
    session = get_session()
    async with session.create_client(
        "sqs",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ) as client:
        yield client
