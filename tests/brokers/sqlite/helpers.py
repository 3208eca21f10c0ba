"""What the SQLite broker's tests share: URLs, brokers, messages, helper processes."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

from herald.broker import Delivery, Prefetch, Subscription
from herald.brokers import broker_from_url
from herald.brokers.sqlite import SQLiteBroker
from herald.capabilities import QueueStats
from herald.message import Message

__all__ = [
    "HOLDER",
    "SUB",
    "Child",
    "connected",
    "foreign_writer",
    "lock_holder",
    "messages",
    "open_broker",
    "settles_on",
    "stats",
    "take",
    "url_for",
]

SUB = Subscription("billing", "invoice.created", ("invoice.*",))


def url_for(path: Path, **options: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


def open_broker(path: Path, **options: object) -> SQLiteBroker:
    broker = broker_from_url(url_for(path, **options))
    assert isinstance(broker, SQLiteBroker)
    return broker


@contextlib.asynccontextmanager
async def connected(path: Path, **options: object) -> AsyncIterator[SQLiteBroker]:
    broker = open_broker(path, **options)
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.close()


def messages(count: int, event_type: str = "invoice.created", size: int = 0) -> list[Message]:
    pad = "x" * size
    return [
        Message(type=event_type, body=f'{{"n": {n}, "pad": "{pad}"}}'.encode())
        for n in range(count)
    ]


async def take(
    broker: SQLiteBroker, count: int, prefetch: int = 100, sub: Subscription = SUB
) -> list[Delivery]:
    """``count`` deliveries, left unsettled (the consume loop is closed)."""
    stream = broker.consume(sub, Prefetch(messages=prefetch))
    taken: list[Delivery] = []
    try:
        async with asyncio.timeout(20):
            async for delivery in stream:
                taken.append(delivery)
                if len(taken) == count:
                    break
    finally:
        await stream.aclose()
    return taken


async def settles_on(
    read: Callable[[], Awaitable[object]], expected: object, timeout: float = 10.0
) -> None:
    """Poll an async reading until it equals ``expected``."""
    deadline = time.monotonic() + timeout
    while (value := await read()) != expected:
        assert time.monotonic() < deadline, f"still {value!r} after {timeout}s, not {expected!r}"
        await asyncio.sleep(0.02)


async def stats(broker: SQLiteBroker, queue: str = SUB.queue) -> QueueStats:
    (found,) = await broker.inspect_queues([queue])
    return found


@contextlib.contextmanager
def foreign_writer(path: Path) -> Iterator[None]:
    """Another program (the sqlite3 shell, a backup) inside a write transaction.

    Takes SQLite's write lock only; touches none of Herald's tables."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")


@contextlib.contextmanager
def lock_holder(path: Path) -> Iterator[None]:
    """A Herald process stuck while holding the writer lock ``<db>.lock``."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


HOLDER = """
import asyncio, sys
from herald.broker import Prefetch, Subscription
from herald.brokers import broker_from_url

async def main():
    broker = broker_from_url(sys.argv[1])
    await broker.connect()
    hold = int(sys.argv[2])
    stream = broker.consume(Subscription("billing", "invoice.created", ("invoice.*",)),
                            Prefetch(messages=hold))
    held = []
    async for delivery in stream:
        held.append(delivery)
        if len(held) == hold:
            break
    print("holding", *sorted(d.message.id for d in held), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    for delivery in held:
        await delivery.ack()
    await stream.aclose()
    await broker.close()
    print("done", flush=True)

asyncio.run(main())
"""
"""``python -c HOLDER URL N``: take N deliveries of :data:`SUB`, print ``holding <ids>``,
ack them after a line on stdin."""


class Child:
    """A helper process running a script, read and written line by line."""

    def __init__(self, script: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    async def line(self, timeout: float = 30) -> str:
        assert self.process.stdout is not None
        read = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), timeout)
        return read.decode().strip()

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)
