"""Helpers of the RabbitMQ tests: server checks, raw publishing, a cuttable TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiormq
import pytest
from aiormq.abc import AbstractConnection
from pamqp import commands as spec

from herald.broker import Delivery

from ...servers import IN_CI, port_open

SERVER = "amqp://guest:guest@127.0.0.1:5672/"
MANAGEMENT = "http://127.0.0.1:15672"
INTEROP = Path(__file__).parent / "interop"
T = TypeVar("T")


def require_server() -> None:
    if port_open(5672):
        return
    if IN_CI:
        pytest.fail("RabbitMQ not reachable on 127.0.0.1:5672 (CI=true: it must run)")
    pytest.skip("RabbitMQ not reachable on 127.0.0.1:5672")


def require_management() -> None:
    require_server()
    if port_open(15672):
        return
    message = "RabbitMQ management API not reachable on 127.0.0.1:15672"
    if IN_CI:
        pytest.fail(f"{message} (rabbitmq-plugins enable rabbitmq_management)")
    pytest.skip(message)


def require_bunny() -> None:
    found = shutil.which("ruby") is not None and (
        subprocess.run(
            ["ruby", "-e", "require 'bunny'"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if found:
        return
    if IN_CI:
        pytest.fail("ruby with the bunny gem is needed (apt-get install ruby-bunny)")
    pytest.skip("ruby with the bunny gem is not installed")


async def next_of(stream: AsyncGenerator[Delivery, None], timeout: float = 10.0) -> Delivery:
    return await asyncio.wait_for(anext(stream), timeout)


async def eventually(
    probe: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    timeout: float = 30.0,
    what: str = "the expected state",
) -> T:
    """Poll ``probe()`` until ``check`` accepts its result; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout:g}s; last: {value!r}")
        await asyncio.sleep(0.1)


async def publish_raw(
    raw: AbstractConnection,
    exchange: str,
    routing_key: str,
    body: bytes,
    **properties: Any,
) -> None:
    """Publish as a foreign (non-Herald) client would, with publisher confirms."""
    channel = await raw.channel(publisher_confirms=True)
    try:
        await channel.basic_publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=spec.Basic.Properties(**properties),
        )
    finally:
        await channel.close()


async def queue_exists(raw: AbstractConnection, name: str) -> bool:
    channel = await raw.channel()
    try:
        await channel.queue_declare(name, passive=True)
        return True
    except aiormq.ChannelNotFoundEntity:
        return False
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def has_arguments(raw: AbstractConnection, name: str, arguments: dict[str, Any]) -> bool:
    """Whether queue ``name`` was declared with exactly these (durable) arguments:
    RabbitMQ accepts a declaration only when it is equivalent."""
    channel = await raw.channel()
    try:
        await channel.queue_declare(name, durable=True, arguments=arguments)
        return True
    except aiormq.ChannelPreconditionFailed:
        return False
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def close_connections_of(namespace: str) -> int:
    """Close, from the server side, every connection Herald opened for ``namespace``."""
    listing = await rabbitmqctl("list_connections", "pid", "client_properties", "-q")
    pids = [line.split("\t")[0] for line in listing.splitlines() if f"ns={namespace} " in line]
    for pid in pids:
        await rabbitmqctl("close_connection", pid, "herald test: connection drop")
    return len(pids)


class Proxy:
    """A TCP proxy to RabbitMQ that a test can cut (every connection dropped, new ones
    refused) and restore: an outage of the server for one client only."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._pipes.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            self._pipes.discard(writer)
            writer.transport.abort()
