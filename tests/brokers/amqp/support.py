"""Helpers of the RabbitMQ tests: server checks, raw publishing, a cuttable TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, TypeVar

import aiormq
from aiormq.abc import AbstractConnection
from pamqp import commands as spec

from herald.broker import Delivery

from ...servers import require_port, unavailable

SERVER = "amqp://guest:guest@127.0.0.1:5672/"
MANAGEMENT = "http://127.0.0.1:15672"
INTEROP = Path(__file__).parent / "interop"
T = TypeVar("T")


def require_server() -> None:
    require_port(5672, "RabbitMQ")


def require_management() -> None:
    require_server()
    require_port(15672, "RabbitMQ management API (rabbitmq-plugins enable rabbitmq_management)")


def require_bunny() -> None:
    found = shutil.which("ruby") is not None and (
        subprocess.run(
            ["ruby", "-e", "require 'bunny'"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if not found:
        unavailable("ruby with the bunny gem is needed (apt-get install ruby-bunny)")


async def next_of(stream: AsyncGenerator[Delivery, None], timeout: float = 10.0) -> Delivery:
    return await asyncio.wait_for(anext(stream), timeout)


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
