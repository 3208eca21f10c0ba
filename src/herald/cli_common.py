"""What every ``herald`` command shares: the usage error, the broker URL, signals."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import TypeVar

from .errors import ConfigurationError
from .url import resolve_url

__all__ = ["UsageError", "broker_url", "stop_on_signals", "until_stopped"]

T = TypeVar("T")


class UsageError(ConfigurationError):
    """The command line asks for something impossible; exits with code 2."""


def broker_url(args: argparse.Namespace, default: str | None = None) -> str:
    """``--broker``, else ``default`` if given, else ``$HERALD_BROKER``, else the embedded one."""
    given: str | None = getattr(args, "broker", None)
    return given or default or resolve_url(None)


@contextlib.contextmanager
def stop_on_signals(force_exit: Callable[[int], object] = os._exit) -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (Ctrl-C ends cleanly).

    A second signal calls ``force_exit(130)``: the way out when cleanup hangs.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            print("herald: interrupted again; exiting without cleanup", file=sys.stderr, flush=True)
            force_exit(130)
        stop.set()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
    try:
        yield stop
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


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
