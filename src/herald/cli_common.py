"""What every ``herald`` command shares: the usage error, the broker URL, signals."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

from .errors import ConfigurationError
from .signals import stop_on_signals
from .url import resolve_url

__all__ = ["UsageError", "broker_url", "stop_on_signals", "until_stopped"]

T = TypeVar("T")


class UsageError(ConfigurationError):
    """The command line asks for something impossible; exits with code 2."""


def broker_url(args: argparse.Namespace, default: str | None = None) -> str:
    """``--broker``, else ``default`` if given, else ``$HERALD_BROKER``, else the embedded one."""
    given: str | None = getattr(args, "broker", None)
    return given or default or resolve_url(None)


async def until_stopped(items: AsyncIterator[T], stop: asyncio.Event) -> AsyncGenerator[T, None]:
    """The items of ``items`` until ``stop`` is set; closes ``items`` either way."""
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while True:
            step = asyncio.ensure_future(anext(items))
            await asyncio.wait((step, stopper), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
                return
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        stopper.cancel()
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
