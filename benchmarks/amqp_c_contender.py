"""The C client (librabbitmq) as a contender of the AMQP suite.

``benchmarks/amqp_c_client.c`` is compiled with ``gcc`` on first use into
``$BENCH_BUILD_DIR`` (default ``~/.cache/herald-bench``, outside the repository).
It does the durable work Herald does: durable topic exchange and queue, persistent
~200-byte JSON messages published a window at a time with publisher confirms
(pipelined, like the aio-pika baseline), consumed with manual acks and prefetch 64.
The harness drives it through pipes: the publisher process writes one line per
window and waits for ``ok``; the consumer process reads one ``SEQ SENT_NS`` line per
message (written before the ack) and feeds the recorder, so the Python side's
reading is counted against the C client too. Needs ``gcc`` and ``librabbitmq-dev``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika

from .harness import Contender, Publisher, Recorder

__all__ = ["CClientContender", "c_client"]

SOURCE = Path(__file__).with_name("amqp_c_client.c")
PREFETCH = 64
ROUTING_KEY = "bench.event"


def _build_dir() -> Path:
    return Path(os.environ.get("BENCH_BUILD_DIR", Path.home() / ".cache" / "herald-bench"))


def c_client() -> Path:
    """The compiled client, rebuilt when the source is newer; raises when gcc fails."""
    binary = _build_dir() / "amqp_c_client"
    if binary.exists() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    command = ["gcc", "-O2", "-o", str(binary), str(SOURCE), "-lrabbitmq"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"gcc failed (is librabbitmq-dev installed?): {done.stderr[-300:]}")
    return binary


def _url() -> str:
    return os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


class _CPublisher:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._turn = asyncio.Lock()  # the latency run publishes from many tasks at once

    async def publish(self, events: Sequence[tuple[int, int]]) -> None:
        assert self._process.stdin is not None and self._process.stdout is not None
        start, stamp = events[0]
        async with self._turn:
            self._process.stdin.write(f"{start} {events[-1][0] + 1} {stamp}\n".encode())
            answer = await self._process.stdout.readline()
        if answer != b"ok\n":
            raise RuntimeError(f"C publisher answered {answer!r}")


class CClientContender(Contender):
    name = "c-librabbitmq"
    description = "librabbitmq C client: confirms per window, manual acks, prefetch 64"

    def _names(self) -> tuple[str, str]:
        prefix = f"bench{self.run_id}.c"
        return f"{prefix}.events", f"{prefix}.bench"

    async def _start(self, *args: str) -> asyncio.subprocess.Process:
        parts = urlsplit(_url())
        exchange, queue = self._names()
        process = await asyncio.create_subprocess_exec(
            str(c_client()),
            *(args[0], parts.hostname or "127.0.0.1", str(parts.port or 5672)),
            *(exchange, queue, ROUTING_KEY, *args[1:]),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        assert process.stdout is not None
        if await process.stdout.readline() != b"ready\n":
            raise RuntimeError(f"C client ({args[0]}) exited with {await process.wait()}")
        return process

    async def check(self) -> None:
        await asyncio.to_thread(c_client)
        connection = await aio_pika.connect(_url())
        await connection.close()

    def publisher(self) -> AbstractAsyncContextManager[Publisher]:
        return self._publisher()

    @asynccontextmanager
    async def _publisher(self) -> AsyncIterator[Publisher]:
        process = await self._start("publish")
        try:
            yield _CPublisher(process)
        finally:
            assert process.stdin is not None
            process.stdin.close()
            await process.wait()

    async def consume(self, recorder: Recorder, ready: Callable[[], None]) -> None:
        process = await self._start("consume", str(PREFETCH))
        assert process.stdout is not None
        try:
            ready()
            while not recorder.done.is_set():
                line = await process.stdout.readline()
                if not line:
                    raise RuntimeError(f"C consumer exited with {await process.wait()}")
                seq, sent_ns = line.split()
                recorder.handled(int(seq), int(sent_ns))
        finally:
            process.kill()
            await process.wait()

    async def cleanup(self) -> None:
        exchange, queue = self._names()
        async with await aio_pika.connect(_url()) as connection:
            channel = await connection.channel()
            await channel.queue_delete(queue)
            await channel.exchange_delete(exchange)
