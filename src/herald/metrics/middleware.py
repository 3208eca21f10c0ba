"""The middleware that counts and times deliveries, publishes and RPC calls.

Put it first in the bus's middleware so that it sees every outcome, including what
other middleware decided:

>>> import asyncio, herald
>>> from prometheus_client import CollectorRegistry
>>> class Counted(herald.Event, type="demo.counted"):
...     n: int
>>> svc = herald.Service("counter")
>>> @svc.on(Counted)
... async def count(event: Counted) -> None:
...     if event.n < 0:
...         raise herald.Reject("negative")
>>> registry = CollectorRegistry()
>>> async def main() -> None:
...     async with herald.connect(
...         "memory://metrics-doctest", middleware=[MetricsMiddleware(registry)]
...     ) as bus:
...         worker = await bus.start(svc)
...         await bus.publish_many([Counted(n=1), Counted(n=2), Counted(n=-1)])
...         while worker.handled < 3:
...             await asyncio.sleep(0.01)
...         await worker.stop()
>>> asyncio.run(main())
>>> labels = {"service": "counter", "queue": "counter.demo.counted", "handler": "count"}
>>> registry.get_sample_value("herald_deliveries_handled_total", {**labels, "outcome": "acked"})
2.0
>>> registry.get_sample_value("herald_dead_letters_total", {**labels, "error_type": "Reject"})
1.0
>>> registry.get_sample_value(
...     "herald_messages_published_total", {"event_type": "demo.counted", "outcome": "confirmed"}
... )
3.0
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from ..context import Context
from ..errors import TimeoutError
from ..message import Message
from ..middleware import Middleware, Next, Outcome, PublishNext, RequestNext, failure
from ..middleware import shutting_down as _shutting_down
from ..rpc import ExpectedError, RemoteError
from .instruments import Instruments, instruments_for

__all__ = ["MetricsMiddleware"]

_OUTCOMES = ("acked", "retried", "dead-lettered", "released")


class _Series:
    """The label children of one handler, looked up once instead of per delivery."""

    __slots__ = ("dead_letters", "durations", "handled", "in_flight", "labels", "retries")

    def __init__(self, m: Instruments, service: str, queue: str, handler: str) -> None:
        self.labels = (service, queue, handler)
        self.handled = {o: m.handled.labels(service, queue, handler, o) for o in _OUTCOMES}
        self.durations = {
            o: m.handling_duration.labels(service, queue, handler, o) for o in _OUTCOMES
        }
        self.in_flight = m.in_flight.labels(service, queue)
        self.retries = m.retries.labels(service, queue, handler)
        self.dead_letters = m.dead_letters


class MetricsMiddleware(Middleware):
    """Records Herald's metrics (see :mod:`herald.metrics.instruments`) in ``registry``
    (default: ``prometheus_client.REGISTRY``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.instruments = instruments_for(registry)
        self._series: dict[tuple[str, str, str], _Series] = {}

    def _series_of(self, ctx: Context) -> _Series:
        key = (ctx.service, ctx.queue, ctx.handler.name)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self.instruments, *key)
        return series

    async def handle(self, ctx: Context, call_next: Next) -> Outcome:
        series = self._series_of(ctx)
        series.in_flight.inc()
        started = time.perf_counter()
        try:
            outcome = await call_next(ctx)
        except asyncio.CancelledError as exc:
            if _shutting_down():
                raise
            outcome = failure(ctx, exc)
        except Exception as exc:  # as the worker would: a middleware below us failed
            outcome = failure(ctx, exc)
        finally:
            series.in_flight.dec()
        label = outcome.label
        series.durations[label].observe(time.perf_counter() - started)
        series.handled[label].inc()
        if label == "retried":
            series.retries.inc()
        elif label == "dead-lettered":
            error_type = outcome.reason.error_type if outcome.reason is not None else "unknown"
            series.dead_letters.labels(*series.labels, error_type).inc()
        return outcome

    async def publish(self, messages: Sequence[Message], call_next: PublishNext) -> None:
        m = self.instruments
        started = time.perf_counter()
        outcome = "failed"
        try:
            await call_next(messages)
            outcome = "confirmed"
        finally:
            m.publish_duration.labels(outcome).observe(time.perf_counter() - started)
            if len(messages) == 1:
                m.published.labels(messages[0].type, outcome).inc()
            else:
                for event_type, count in Tally(message.type for message in messages).items():
                    m.published.labels(event_type, outcome).inc(count)

    async def request(self, message: Message, call_next: RequestNext) -> Message:
        m = self.instruments
        started = time.perf_counter()
        outcome = "failed"
        try:
            reply = await call_next(message)
            outcome = "ok"
            return reply
        except BaseException as exc:
            outcome = _rpc_outcome(exc)
            raise
        finally:
            m.rpc_duration.labels(message.type).observe(time.perf_counter() - started)
            m.rpc_calls.labels(message.type, outcome).inc()


def _rpc_outcome(exc: BaseException) -> str:
    """``error`` for an error reply, ``timeout`` when none came, ``failed`` otherwise."""
    if isinstance(exc, ExpectedError | RemoteError):
        return "error"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "failed" if isinstance(exc, Exception) else "cancelled"
