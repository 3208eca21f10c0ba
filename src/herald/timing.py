"""The shape shared by middleware that watch every delivery: time the handler chain,
take its outcome (what the worker would make of an error raised below), record both.

:class:`TimedMiddleware` runs that shape once; a subclass says what to do when a
delivery starts (:meth:`~TimedMiddleware.started`) and when it is done
(:meth:`~TimedMiddleware.finished`). :class:`herald.metrics.MetricsMiddleware` and
:class:`herald.telemetry.TelemetryMiddleware` are two.

>>> import asyncio, herald
>>> class Timings(TimedMiddleware[None]):
...     def __init__(self) -> None:
...         self.seen: list[str] = []
...     def started(self, ctx: herald.Context) -> None:
...         return None
...     def finished(self, ctx, state, outcome, seconds):
...         self.seen.append(outcome.label)
>>> class Timed(herald.Event, type="demo.timed"):
...     n: int
>>> svc = herald.Service("timed")
>>> @svc.on(Timed)
... async def timed(event: Timed) -> None:
...     if event.n < 0:
...         raise herald.Reject("negative")
>>> timings = Timings()
>>> async def main() -> None:
...     async with herald.connect("memory://timing-doctest", middleware=[timings]) as bus:
...         worker = await bus.start(svc)
...         await bus.publish_many([Timed(n=1), Timed(n=-1)])
...         while worker.handled < 2:
...             await asyncio.sleep(0.01)
...         await worker.stop()
>>> asyncio.run(main())
>>> sorted(timings.seen)
['acked', 'dead-lettered']
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Generic, TypeVar

from .context import Context
from .middleware import Middleware, Next, Outcome, failure, shutting_down

__all__ = ["TimedMiddleware"]

_State = TypeVar("_State")


class TimedMiddleware(Middleware, Generic[_State]):
    """Times each delivery's handler chain and hands its outcome to :meth:`finished`.

    An error raised below (by other middleware) becomes the outcome the worker would
    make of it; a worker stopping (the task cancelled from outside) still calls
    :meth:`finished`, with no outcome, and the cancellation goes on.
    """

    def started(self, ctx: Context) -> _State:
        """Called as a delivery enters the chain; what it returns goes to :meth:`finished`."""
        raise NotImplementedError

    def finished(
        self, ctx: Context, state: _State, outcome: Outcome | None, seconds: float
    ) -> None:
        """Called once the chain returned ``outcome`` after ``seconds`` (None: the
        worker is stopping and releases the delivery)."""
        raise NotImplementedError

    async def handle(self, ctx: Context, call_next: Next) -> Outcome:
        state = self.started(ctx)
        began = perf_counter()
        try:
            outcome = await call_next(ctx)
        except asyncio.CancelledError as exc:
            if shutting_down():
                self.finished(ctx, state, None, perf_counter() - began)
                raise
            outcome = failure(ctx, exc)
        except Exception as exc:  # as the worker would: a middleware below us failed
            outcome = failure(ctx, exc)
        self.finished(ctx, state, outcome, perf_counter() - began)
        return outcome
