"""A process holding an exclusive queue, for tests that kill or stop it.

``python -m tests.brokers.redis.holder URL SERVICE OUTFILE PREFETCH`` consumes
``SERVICE.demo.tick`` exclusively with a window of PREFETCH messages, appends each
delivery's message id to OUTFILE (flushed at once) and never settles anything, so
that what it holds stays unsettled until it dies.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from herald.broker import Prefetch, Subscription
from herald.brokers import broker_from_url

__all__ = ["main"]


async def hold(url: str, service: str, out: Path, prefetch: int) -> None:
    subscription = Subscription(service, "demo.tick", exclusive=True)
    async with broker_from_url(url) as broker:
        with out.open("a", buffering=1) as record:
            async for delivery in broker.consume(subscription, Prefetch(prefetch)):
                record.write(f"{delivery.message.id}\n")
                record.flush()


def main(argv: list[str]) -> None:
    url, service, out, prefetch = argv
    asyncio.run(hold(url, service, Path(out), int(prefetch)))


if __name__ == "__main__":
    main(sys.argv[1:])
