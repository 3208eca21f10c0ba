"""A publisher or a consumer in a process of its own (run inside a network namespace
by the network-fault tests), recording what it does as lines of ``out``::

    ready <t>             connected (consumer: its worker started)
    p <n> <t>             event n confirmed by the broker
    e <t> <error>         a publish failed (sent again until confirmed)
    h <n> <t>             event n handled
    l <t> <log record>    a warning of Herald's (a lost connection, a reconnection)

``python -m tests.cluster.client publish URL OUT`` publishes and
``python -m tests.cluster.client consume URL OUT SERVICE`` consumes, until SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

from herald.bus import connect

from .load import Handled, Published, publish_until, recording_service


class _Lines(logging.Handler):
    def __init__(self, out: TextIO) -> None:
        super().__init__(logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record).replace("\n", " ")
        self.out.write(f"l {time.monotonic():.3f} {record.name}: {text}\n")
        self.out.flush()


class _Recorded(Handled):
    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self.out = out

    def add(self, n: int) -> None:
        self.out.write(f"h {n} {time.monotonic():.3f}\n")
        self.out.flush()


class _Confirmations(Published):
    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self.out = out

    def confirm(self, numbers: range, when: float) -> None:
        self.out.writelines(f"p {n} {when:.3f}\n" for n in numbers)
        self.out.flush()

    def fail(self, when: float, error: str) -> None:
        self.out.write(f"e {when:.3f} {error.replace(chr(10), ' ')}\n")
        self.out.flush()


async def _publish(url: str, out: TextIO) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with connect(url) as bus:
        out.write(f"ready {time.monotonic():.3f}\n")
        out.flush()
        await publish_until(bus, stop, _Confirmations(out), batch=10, pause=0.1)


async def _consume(url: str, out: TextIO, service: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with connect(url) as bus:
        worker = await bus.start(recording_service(service, _Recorded(out)))
        out.write(f"ready {time.monotonic():.3f}\n")
        out.flush()
        await stop.wait()
        await worker.stop()


def main(argv: list[str]) -> None:
    mode, url, path, *service = argv
    with Path(path).open("a") as out:
        logging.getLogger("herald").addHandler(_Lines(out))
        if mode == "publish":
            asyncio.run(_publish(url, out))
        else:
            asyncio.run(_consume(url, out, service[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
