"""A small service for the CLI tests: ``herald run tests.demo_app:service``.

``demo.ping`` events are appended, one text per line, to the file named by
``$DEMO_APP_OUT``; ``demo.poison`` events are rejected, so they become dead letters.
"""

from __future__ import annotations

import asyncio
import os

import herald

__all__ = ["Ping", "service"]


class Ping(herald.Event, type="demo.ping"):
    text: str


service = herald.Service("demoapp", retry=herald.RetryPolicy(attempts=1))
not_a_service = "just a string"


def _append(line: str) -> None:
    with open(os.environ["DEMO_APP_OUT"], "a", encoding="utf-8") as out:
        out.write(line + "\n")


@service.on(Ping)
async def record(event: Ping) -> None:
    await asyncio.to_thread(_append, event.text)


@service.on("demo.poison")
async def refuse(message: herald.Message) -> None:
    raise herald.Reject(f"cannot digest {message.id}")
