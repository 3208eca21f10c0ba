"""A consumer process for multi-process scenarios.

``python -m herald.testing.child URL SERVICE OUTFILE [--pause-after N]`` consumes
``Tick`` events as SERVICE (concurrency 4, prefetch 8) and appends each handled
``n`` to OUTFILE, flushed before the ack, so a SIGKILL loses no record of a handled
event. With ``--pause-after N`` it records N events, writes ``OUTFILE.paused`` and
then holds every further delivery unhandled, so that a kill lands mid-stream for
certain.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ..bus import connect
from ..context import Context
from ..service import Service
from .events import Tick

__all__ = ["CONCURRENCY", "PREFETCH", "main"]

CONCURRENCY = 4
PREFETCH = 8


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m herald.testing.child")
    parser.add_argument("url")
    parser.add_argument("service")
    parser.add_argument("outfile", type=Path)
    parser.add_argument("--pause-after", type=int, default=0)
    args = parser.parse_args(argv)
    service = Service(args.service, concurrency=CONCURRENCY, prefetch=PREFETCH)
    out = args.outfile.open("a", buffering=1)
    handled = 0
    never = asyncio.Event()

    @service.on(Tick)
    async def record(event: Tick, ctx: Context) -> None:
        nonlocal handled
        if args.pause_after and handled >= args.pause_after:
            await never.wait()
        handled += 1
        out.write(f"{event.n}\n")
        out.flush()
        if handled == args.pause_after:
            args.outfile.with_suffix(".paused").write_text(str(handled))

    async def run() -> None:
        async with connect(args.url, source="conformance-child") as bus:
            await bus.serve(service, shutdown_timeout=2.0)

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1:])
