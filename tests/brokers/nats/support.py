"""What the NATS tests share: isolated URLs, waiting helpers and a TCP relay to cut."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

from herald.broker import Delivery
from herald.brokers import broker_from_url
from herald.brokers.nats import NATSBroker
from herald.capabilities import QueueStats
from herald.message import Message
from herald.testing import eventually

from ...relay import Relay
from ...servers import require_port

__all__ = [
    "Relay",
    "connected",
    "counts_become",
    "nats_url",
    "next_delivery",
    "number",
    "require_nats",
    "tick",
]

NATS_PORT = 4222


def require_nats() -> None:
    require_port(NATS_PORT, "NATS")


def nats_url(port: int = NATS_PORT, **options: str) -> str:
    """A URL with a namespace of its own, so tests never see each other's streams."""
    query = "&".join(
        f"{k}={v}" for k, v in {"namespace": f"tn{uuid.uuid4().hex[:8]}", **options}.items()
    )
    return f"nats://127.0.0.1:{port}/?{query}"


async def connected(url: str) -> NATSBroker:
    made = broker_from_url(url)
    assert isinstance(made, NATSBroker)
    await made.connect()
    return made


async def next_delivery(stream: AsyncIterator[Delivery], timeout: float = 10) -> Delivery:
    return await asyncio.wait_for(anext(stream), timeout)


async def counts_become(
    broker: NATSBroker, queue: str, wanted: tuple[int, int | None, int | None]
) -> QueueStats:
    """The queue's stats once (depth, in_flight, consumers) are ``wanted``: the
    processes' reports lag their changes by a fraction of a second."""
    found: list[QueueStats] = []

    async def check() -> bool:
        found[:] = await broker.inspect_queues([queue])
        return bool(found) and (found[0].depth, found[0].in_flight, found[0].consumers) == wanted

    try:
        await eventually(check, 10, f"{queue} to show {wanted}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {found}") from None
    return found[0]


def tick(n: int, event_type: str = "employee.created", size: int = 0) -> Message:
    body = json.dumps({"n": n, "pad": "x" * size}).encode()
    return Message(type=event_type, body=body, subject=f"k{n % 4}")


def number(delivery: Delivery) -> int:
    value: int = json.loads(delivery.message.body)["n"]
    return value
