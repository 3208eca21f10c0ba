"""A consumer process for multi-process scenarios.

``python -m herald.testing.child URL SERVICE OUTFILE [--pause-after N] [--keyed]
[--exclusive]`` consumes ``Tick`` events as SERVICE (concurrency 4, prefetch 8) and
appends each handled ``n`` to OUTFILE, flushed before the ack, so a SIGKILL loses no
record of a handled event. With ``--keyed`` it consumes ``Keyed`` events instead and
records ``PID KEY SEQ``; with ``--exclusive`` its queue is exclusive (one consuming
process at a time). With ``--pause-after N`` it records N events, writes
``OUTFILE.paused`` and then holds every further delivery unhandled, so that a kill
lands mid-stream for certain.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from ..bus import connect
from ..context import Context
from ..service import Service
from .events import Keyed, Tick
from .scenarios.common import CHILD_CONCURRENCY, CHILD_PREFETCH

__all__ = ["main"]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m herald.testing.child")
    parser.add_argument("url")
    parser.add_argument("service")
    parser.add_argument("outfile", type=Path)
    parser.add_argument("--pause-after", type=int, default=0)
    parser.add_argument("--keyed", action="store_true")
    parser.add_argument("--exclusive", action="store_true")
    args = parser.parse_args(argv)
    service = Service(
        args.service,
        concurrency=CHILD_CONCURRENCY,
        prefetch=CHILD_PREFETCH,
        exclusive=args.exclusive,
    )
    out = args.outfile.open("a", buffering=1)
    handled = 0
    never = asyncio.Event()

    async def record(line: str) -> None:
        nonlocal handled
        if args.pause_after and handled >= args.pause_after:
            await never.wait()
        handled += 1
        out.write(f"{line}\n")
        out.flush()
        if handled == args.pause_after:
            args.outfile.with_suffix(".paused").write_text(str(handled))

    if args.keyed:

        @service.on(Keyed)
        async def keyed(event: Keyed, ctx: Context) -> None:
            await record(f"{os.getpid()} {event.key} {event.seq}")

    else:

        @service.on(Tick)
        async def tick(event: Tick, ctx: Context) -> None:
            await record(str(event.n))

    async def run() -> None:
        async with connect(args.url, source="conformance-child") as bus:
            await bus.serve(service, shutdown_timeout=2.0)

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1:])
