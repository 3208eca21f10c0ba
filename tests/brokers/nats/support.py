"""What the NATS tests share: isolated URLs, waiting helpers and a TCP relay to cut."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from herald.broker import Delivery
from herald.brokers import broker_from_url
from herald.brokers.nats import NATSBroker
from herald.capabilities import QueueStats
from herald.message import Message

from ...servers import IN_CI, port_open

__all__ = [
    "Relay",
    "connected",
    "counts_become",
    "eventually",
    "nats_url",
    "next_delivery",
    "number",
    "require_nats",
    "tick",
]

NATS_PORT = 4222


def require_nats() -> None:
    if port_open(NATS_PORT):
        return
    if IN_CI:
        pytest.fail("NATS not reachable on 127.0.0.1:4222 (CI=true: brokers must be running)")
    pytest.skip("NATS not reachable on 127.0.0.1:4222")


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


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


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
        await eventually(check, f"{queue} to show {wanted}", timeout=10)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {found}") from None
    return found[0]


def tick(n: int, event_type: str = "employee.created", size: int = 0) -> Message:
    body = json.dumps({"n": n, "pad": "x" * size}).encode()
    return Message(type=event_type, body=body, subject=f"k{n % 4}")


def number(delivery: Delivery) -> int:
    value: int = json.loads(delivery.message.body)["n"]
    return value


class Relay:
    """A TCP relay to the NATS server that a test can cut: :meth:`cut` drops every
    connection through it and refuses new ones until :meth:`restore`, which is how a
    network outage looks to a client, without touching the shared server."""

    def __init__(self, target: int = NATS_PORT) -> None:
        self._target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self.connections = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._link, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def restore(self) -> None:
        await self.start()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._links.update((writer, up_writer))
        await asyncio.gather(
            _pump(reader, up_writer), _pump(up_reader, writer), return_exceptions=True
        )
        for end in (writer, up_writer):
            self._links.discard(end)
            end.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
