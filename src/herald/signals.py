"""Running until SIGINT or SIGTERM, and what a Herald program exits with.

Every long-running Herald program (``herald run``, ``bus.serve``, the HR platform's
services and supervisor) stops the same way: the first SIGINT or SIGTERM asks it to
shut down gracefully; a second one, for when cleanup hangs, exits at once with
:data:`EXIT_FORCED`. Exit codes:

- :data:`EXIT_OK` (0): finished, or stopped by a signal after a clean shutdown;
- :data:`EXIT_FAILURE` (1): an error ended the program;
- :data:`EXIT_USAGE` (2): bad command line or configuration;
- :data:`EXIT_FORCED` (130): a second signal cut the shutdown short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator

__all__ = ["EXIT_FAILURE", "EXIT_FORCED", "EXIT_OK", "EXIT_USAGE", "stop_on_signals"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_FORCED = 130

log = logging.getLogger("herald.signals")


@contextlib.contextmanager
def stop_on_signals(
    force_exit: Callable[[int], object] = os._exit,
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[asyncio.Event]:
    """An event set by the first SIGINT or SIGTERM while the block runs; a second one
    calls ``force_exit(EXIT_FORCED)``. Where signals cannot be handled (not the main
    thread, Windows) the event is only set by whoever holds it.

    >>> import asyncio, os, signal
    >>> async def main() -> bool:
    ...     with stop_on_signals() as stop:
    ...         os.kill(os.getpid(), signal.SIGTERM)
    ...         await asyncio.wait_for(stop.wait(), 5)
    ...         return stop.is_set()
    >>> asyncio.run(main())
    True
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            print("herald: interrupted again; exiting without cleanup", file=sys.stderr, flush=True)
            force_exit(EXIT_FORCED)
            return
        log.info("signal received; shutting down")
        stop.set()

    installed: list[signal.Signals] = []
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
    try:
        yield stop
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
