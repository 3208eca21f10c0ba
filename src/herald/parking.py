"""Coroutines parked on the futures they wait for, instead of a task each.

The worker acks a keyless delivery without letting its runner wait (see
:mod:`herald.worker`). Most adapters' acks never wait (a NATS or AMQP ack is a write to
the socket), so the ack coroutine is run at once, to its end. One that waits for the
broker (Redis: a batch of acks in one script call) is parked on the future it awaits
and resumed by that future's done callback: one callback per future, however many
acks wait on it, where a task per delivery would cost a quarter of the runtime's time.

>>> import asyncio
>>> async def main() -> list[str]:
...     done: list[str] = []
...     reply = asyncio.get_running_loop().create_future()
...     async def ack(name: str) -> None:
...         await reply
...         done.append(name)
...     parking = Parking()
...     parking.start(ack("a")); parking.start(ack("b"))
...     waiting = len(parking)
...     reply.set_result(None)
...     await parking.wait(1.0)
...     return [str(waiting), *done]
>>> asyncio.run(main())
['2', 'a', 'b']
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["Parking"]

log = logging.getLogger("herald.worker")
Parked = Coroutine[Any, Any, None]


class Parking:
    """Runs coroutines to their end, parking each on the future it waits for."""

    __slots__ = ("_empty", "_parked", "count")

    def __init__(self) -> None:
        self._parked: dict[Any, list[Parked]] = {}
        self.count = 0
        """How many coroutines are parked (started, not finished)."""
        self._empty: asyncio.Event | None = None

    def __len__(self) -> int:
        """How many coroutines are parked (started, not finished)."""
        return self.count

    def start(self, coro: Parked) -> None:
        """Run ``coro`` until it finishes or waits; if it waits, park it."""
        if self._step(coro):
            self.count += 1

    async def wait(self, timeout: float) -> None:
        """Return once every parked coroutine finished, or after ``timeout`` seconds;
        then close those still parked (their ``finally`` blocks run)."""
        if self.count:
            self._empty = asyncio.Event()
            try:
                async with asyncio.timeout(timeout):
                    await self._empty.wait()
            except TimeoutError:
                log.warning("%d ack(s) still waiting after %.1fs; abandoned", self.count, timeout)
        parked, self._parked = self._parked, {}
        for waiting in parked.values():
            for coro in waiting:
                coro.close()
        self.count = 0

    def _step(self, coro: Parked) -> bool:
        """Resume ``coro``; True if it is parked again, False if it finished."""
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return False
        except BaseException as exc:  # the worker's settle catches what it expects
            log.debug("an ack ended with %r", exc)
            return False
        if waiting_on is None:  # a bare yield: asyncio.sleep(0)
            asyncio.get_running_loop().call_soon(self._resume_one, coro)
            return True
        waiting_on._asyncio_future_blocking = False  # taken over, as a task does
        queue = self._parked.get(waiting_on)
        if queue is None:
            self._parked[waiting_on] = [coro]
            waiting_on.add_done_callback(self._resume)
        else:
            queue.append(coro)
        return True

    def _resume(self, future: Any) -> None:
        for coro in self._parked.pop(future, ()):
            self._resume_one(coro)

    def _resume_one(self, coro: Parked) -> None:
        if not self._step(coro):
            self.count = max(0, self.count - 1)
            if not self.count and self._empty is not None:
                self._empty.set()
