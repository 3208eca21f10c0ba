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

import time
from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from ..context import Context
from ..errors import TimeoutError
from ..message import Message
from ..middleware import Outcome, PublishNext, RequestNext
from ..rpc import ExpectedError, RemoteError
from ..timing import TimedMiddleware
from .instruments import Instruments, instruments_for

__all__ = ["MetricsMiddleware"]

_OUTCOMES = ("acked", "retried", "dead-lettered", "released")
_CHILDREN_MAX = 1024


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


class MetricsMiddleware(TimedMiddleware[_Series]):
    """Records Herald's metrics (see :mod:`herald.metrics.instruments`) in ``registry``
    (default: ``prometheus_client.REGISTRY``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.instruments = instruments_for(registry)
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, family: str, *labels: str) -> Any:
        """The child of instrument ``family`` with ``labels``, looked up once (bounded:
        an event type can come from outside, e.g. a reply's)."""
        key = (family, *labels)
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= _CHILDREN_MAX:
                self._children.clear()
            child = self._children[key] = getattr(self.instruments, family).labels(*labels)
        return child

    def started(self, ctx: Context) -> _Series:
        key = (ctx.service, ctx.queue, ctx.handler.name)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self.instruments, *key)
        series.in_flight.inc()
        return series

    def finished(
        self, ctx: Context, state: _Series, outcome: Outcome | None, seconds: float
    ) -> None:
        state.in_flight.dec()
        if outcome is None:
            return
        label = outcome.label
        state.durations[label].observe(seconds)
        state.handled[label].inc()
        if label == "retried":
            state.retries.inc()
        elif label == "dead-lettered":
            error_type = outcome.reason.error_type if outcome.reason is not None else "unknown"
            state.dead_letters.labels(*state.labels, error_type).inc()

    async def publish(self, messages: Sequence[Message], call_next: PublishNext) -> None:
        started = time.perf_counter()
        outcome = "failed"
        try:
            await call_next(messages)
            outcome = "confirmed"
        finally:
            self._child("publish_duration", outcome).observe(time.perf_counter() - started)
            if len(messages) == 1:
                self._child("published", messages[0].type, outcome).inc()
            else:
                for event_type, count in Tally(message.type for message in messages).items():
                    self._child("published", event_type, outcome).inc(count)

    async def request(self, message: Message, call_next: RequestNext) -> Message:
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
            self._child("rpc_duration", message.type).observe(time.perf_counter() - started)
            self._child("rpc_calls", message.type, outcome).inc()


def _rpc_outcome(exc: BaseException) -> str:
    """``error`` for an error reply, ``timeout`` when none came, ``failed`` otherwise."""
    if isinstance(exc, ExpectedError | RemoteError):
        return "error"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "failed" if isinstance(exc, Exception) else "cancelled"
