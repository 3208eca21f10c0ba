"""Stopping a background task from the task that owns it.

``contextlib.suppress(asyncio.CancelledError)`` around ``await task`` after
``task.cancel()`` also swallows a cancellation of the *awaiting* task that arrives
meanwhile: the awaiting task then runs on (a consumer loop sleeps and subscribes
again) and whoever cancelled it waits forever. :func:`cancel_and_wait` swallows only
the stopped task's own ``CancelledError``.

>>> import asyncio
>>> async def main() -> str:
...     background = asyncio.create_task(asyncio.sleep(60))
...     await asyncio.sleep(0)
...     await cancel_and_wait(background)
...     return "stopped" if background.cancelled() else "running"
>>> asyncio.run(main())
'stopped'
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait", "cancelling"]


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended (an error it ended with is raised);
    a cancellation of the caller while it waits is raised, not swallowed."""
    task.cancel()
    current = asyncio.current_task()
    before = current.cancelling() if current is not None else 0
    try:
        await task
    except asyncio.CancelledError:
        if current is not None and current.cancelling() > before:
            raise


def cancelling() -> bool:
    """Whether the running task is being cancelled: a loop that retries on ``Exception``
    asks this before it retries, because a client library may turn the
    ``CancelledError`` it was interrupted with into an error of its own."""
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0
