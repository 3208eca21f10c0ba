"""The slow consumer of the backlog soak (``tests/soak/test_backlog.py``), a process of
its own so that its memory is measured alone.

``python -m tests.soak.backlog_consumer URL SERVICE COUNT OUTDIR [--concurrency N]
[--prefetch N] [--prefetch-bytes B] [--work S]`` connects, writes ``OUTDIR/ready``
(its resident memory then, in bytes), and consumes ``soak.backlog`` messages whose
body starts with their number ``n`` (8 bytes, big-endian), ``0 <= n < COUNT``. Each
handling hashes the body and sleeps ``--work`` seconds (a slow handler). Once every
number was handled it writes ``OUTDIR/done`` (JSON: distinct, duplicates, seconds
from the first handling to the last) and keeps consuming, idle, until SIGTERM; then
it writes ``OUTDIR/stopped`` (the final distinct and duplicate counts).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import herald
from herald.bus import connect

__all__ = ["EVENT_TYPE", "backlog_service", "body", "main", "resident_bytes"]

EVENT_TYPE = "soak.backlog"


def body(n: int, size: int) -> bytes:
    """A message body of ``size`` bytes (at least 8) carrying ``n``."""
    return n.to_bytes(8, "big") + bytes(max(0, size - 8))


def resident_bytes(pid: int | str = "self", field: str = "VmRSS") -> int:
    """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"{field} not in /proc/{pid}/status")


def backlog_service(
    name: str,
    handle: Callable[[herald.Message], Awaitable[None]] | None = None,
    *,
    concurrency: int = 16,
    prefetch: int | None = None,
    prefetch_bytes: int = 64 * 2**20,
) -> herald.Service:
    service = herald.Service(
        name, concurrency=concurrency, prefetch=prefetch, prefetch_bytes=prefetch_bytes
    )

    async def ignore(message: herald.Message) -> None:
        raise AssertionError("declaring only")

    service.on(EVENT_TYPE)(handle or ignore)
    return service


def _write(path: Path, text: str) -> None:
    """Write whole or not at all: the test polls for the file."""
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    part.replace(path)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.soak.backlog_consumer")
    parser.add_argument("url")
    parser.add_argument("service")
    parser.add_argument("count", type=int)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--prefetch", type=int, default=None)
    parser.add_argument("--prefetch-bytes", type=int, default=64 * 2**20)
    parser.add_argument("--work", type=float, default=0.001)
    args = parser.parse_args(argv)
    seen = bytearray(args.count)
    tally = {"distinct": 0, "duplicates": 0}
    times: list[float] = []

    async def handle(message: herald.Message) -> None:
        hashlib.blake2b(message.body).digest()
        await asyncio.sleep(args.work)
        n = int.from_bytes(message.body[:8], "big")
        if not times:
            times.append(time.monotonic())
        if seen[n]:
            tally["duplicates"] += 1
            return
        seen[n] = 1
        tally["distinct"] += 1
        if tally["distinct"] == args.count:
            seconds = time.monotonic() - times[0]
            _write(args.outdir / "done", json.dumps({**tally, "seconds": seconds}))

    service = backlog_service(
        args.service,
        handle,
        concurrency=args.concurrency,
        prefetch=args.prefetch,
        prefetch_bytes=args.prefetch_bytes,
    )

    async def run() -> None:
        async with connect(args.url, source="backlog-soak") as bus:
            _write(args.outdir / "ready", str(resident_bytes()))
            await bus.serve(service, shutdown_timeout=5.0)
        _write(args.outdir / "stopped", json.dumps(tally))

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1:])
