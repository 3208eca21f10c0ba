"""Await conditions in tests without sleeping blindly."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Recorder", "eventually", "until"]

T = TypeVar("T")


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.01,
) -> None:
    """Poll ``condition`` (a function, or a coroutine function) every ``interval``
    seconds until it is true; fail after ``timeout`` seconds, naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(interval)


async def until(
    probe: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    timeout: float = 30.0,
    what: str = "the expected state",
    interval: float = 0.1,
) -> T:
    """The value of ``probe()`` once ``check`` accepts it; fail after ``timeout``
    seconds, naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout:g}s; last: {value!r}")
        await asyncio.sleep(interval)


class Recorder(Generic[T]):
    """Collects items (from handlers) and lets a test wait for a count of them.

    >>> r: Recorder[int] = Recorder()
    >>> r.add(1); r.items
    [1]
    """

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = asyncio.Event()

    def add(self, item: T) -> None:
        self.items.append(item)
        self._changed.set()

    def __len__(self) -> int:
        return len(self.items)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[T]:
        """Wait until at least ``count`` items arrived; return them."""
        deadline = time.monotonic() + timeout
        while len(self.items) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {timeout:.1f}s: {len(self.items)} of {count} items arrived"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.25)):
                    await self._changed.wait()
        return self.items
