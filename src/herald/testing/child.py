"""A consumer process for multi-process scenarios.

``python -m herald.testing.child URL SERVICE OUTFILE DELAY`` consumes ``Tick`` events
as SERVICE and appends each handled ``n`` to OUTFILE (flushed before the ack, so a
SIGKILL loses no record of a handled event), sleeping DELAY seconds per event.
"""

from __future__ import annotations

import asyncio
import sys

from ..bus import connect
from ..context import Context
from ..service import Service
from .events import Tick

__all__ = ["main"]


def main(argv: list[str]) -> None:
    url, service_name, outfile, delay = argv[0], argv[1], argv[2], float(argv[3])
    service = Service(service_name, concurrency=4)
    out = open(outfile, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    @service.on(Tick)
    async def record(event: Tick, ctx: Context) -> None:
        await asyncio.sleep(delay)
        out.write(f"{event.n}\n")
        out.flush()

    async def run() -> None:
        async with connect(url, source="conformance-child") as bus:
            await bus.serve(service, shutdown_timeout=2.0)

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1:])
