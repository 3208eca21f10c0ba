"""The small app whose idle footprint :mod:`benchmarks.footprint` measures.

``herald run benchmarks.idle_app:service``: one service, two handlers (one typed,
one raw); each handled event appends a line to ``$IDLE_APP_OUT``, so the caller
knows when its warm-up events were handled.
"""

from __future__ import annotations

import asyncio
import os

import herald

__all__ = ["Ping", "service"]


class Ping(herald.Event, type="idle.ping"):
    text: str


service = herald.Service("idleapp")


def _append(line: str) -> None:
    with open(os.environ["IDLE_APP_OUT"], "a", encoding="utf-8") as out:
        out.write(line + "\n")


@service.on(Ping)
async def record(event: Ping) -> None:
    await asyncio.to_thread(_append, event.text)


@service.on("idle.other")
async def record_other(message: herald.Message) -> None:
    await asyncio.to_thread(_append, message.id)
