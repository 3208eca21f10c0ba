"""The middleware that reports what a process publishes and handles, on the bus itself.

Every ``interval`` seconds :meth:`TelemetryMiddleware.run` publishes one
:class:`~herald.telemetry.records.TelemetryReport` (event type
``herald.telemetry.report``): counts per event type published, counts and latency
buckets per queue, type and outcome handled, and one record per message (capped at
``max_records`` per report) for the message trail. It works on every broker and needs
no port: whoever wants the reports (``herald dashboard``) subscribes to them; with
nobody subscribed the broker drops them. Reports go straight to the broker, past the
bus's other middleware, so they are not themselves traced, counted or reported.

>>> import asyncio, herald
>>> from herald.telemetry.records import REPORT_TYPE
>>> class Noted(herald.Event, type="demo.noted"):
...     n: int
>>> svc = herald.Service("notes")
>>> @svc.on(Noted)
... async def note(event: Noted) -> None:
...     pass
>>> telemetry = TelemetryMiddleware(interval=0.05)
>>> async def main() -> TelemetryReport:
...     async with herald.connect("memory://telemetry-doctest", middleware=[telemetry]) as bus:
...         listener = herald.Subscription("watch", "reports", (REPORT_TYPE,), durable=False)
...         await bus.broker.declare(listener)
...         worker = await bus.start(svc)
...         reporting = asyncio.create_task(telemetry.run(bus))
...         await bus.publish(Noted(n=1))
...         async for delivery in bus.broker.consume(listener, herald.Prefetch()):
...             await delivery.ack()
...             report = TelemetryReport.model_validate_json(delivery.message.body)
...             if report.handled:
...                 break
...         reporting.cancel()
...         await worker.stop()
...         return report
>>> report = asyncio.run(main())
>>> [(c.queue, c.outcome, c.count) for c in report.handled]
[('notes.demo.noted', 'acked', 1)]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from ..bus import Bus
from ..context import Context
from ..headers import CAUSATION_ID, CORRELATION_ID
from ..message import Message
from ..middleware import Outcome, PublishNext
from ..timing import TimedMiddleware
from ..tracing.propagation import creation_context
from .records import (
    BUCKETS_MS,
    HandledCount,
    Handling,
    PublishedCount,
    Publishing,
    TelemetryReport,
    bucket_of,
)

__all__ = ["TelemetryMiddleware"]

log = logging.getLogger("herald.telemetry")
_PREFIX = "herald.telemetry."


def _trace_id(message: Message) -> str | None:
    context = creation_context(message.headers)
    return None if context is None else f"{context.trace_id:032x}"


def _short(text: str | None, limit: int = 200) -> str | None:
    return None if text is None else text[:limit]


class _Interval:
    """What happened since the last report."""

    def __init__(self) -> None:
        self.started = time.time()
        self.published: dict[str, int] = {}
        self.handled: dict[tuple[str, str, str], list[int]] = {}
        self.publishings: list[Publishing] = []
        self.handlings: list[Handling] = []
        self.dropped = 0

    def empty(self) -> bool:
        return not (self.published or self.handled or self.dropped)


class TelemetryMiddleware(TimedMiddleware[None]):
    """Counts and records deliveries and publishes; :meth:`run` reports them."""

    def __init__(self, *, interval: float = 2.0, max_records: int = 1_000) -> None:
        if interval <= 0 or max_records < 0:
            raise ValueError("interval must be positive and max_records >= 0")
        self.interval = interval
        self.max_records = max_records
        self._current = _Interval()

    def _room(self) -> bool:
        current = self._current
        if len(current.publishings) + len(current.handlings) < self.max_records:
            return True
        current.dropped += 1
        return False

    def started(self, ctx: Context) -> None:
        return None

    def finished(self, ctx: Context, state: None, outcome: Outcome | None, seconds: float) -> None:
        if outcome is None:
            return
        elapsed_ms = seconds * 1000
        message = ctx.message
        key = (ctx.queue, message.type, outcome.label)
        current = self._current
        counts = current.handled.get(key)
        if counts is None:
            counts = current.handled[key] = [0] * (len(BUCKETS_MS) + 1)
        counts[bucket_of(elapsed_ms)] += 1
        if self._room():
            error = outcome.reason or outcome.error
            current.handlings.append(
                Handling(
                    id=message.id,
                    type=message.type,
                    service=ctx.service,
                    queue=ctx.queue,
                    attempt=ctx.attempt,
                    outcome=outcome.label,
                    duration_ms=round(elapsed_ms, 3),
                    time=time.time(),
                    error=_short(None if error is None else str(error) or type(error).__name__),
                    correlation_id=_short(message.headers.get(CORRELATION_ID)),
                    trace_id=_trace_id(message),
                )
            )

    async def publish(self, messages: Sequence[Message], call_next: PublishNext) -> None:
        await call_next(messages)
        current = self._current
        for message in messages:
            if message.type.startswith(_PREFIX):
                continue
            current.published[message.type] = current.published.get(message.type, 0) + 1
            if self._room():
                current.publishings.append(
                    Publishing(
                        id=message.id,
                        type=message.type,
                        source=message.source,
                        time=message.time.timestamp(),
                        subject=_short(message.subject),
                        correlation_id=_short(message.headers.get(CORRELATION_ID)),
                        causation_id=_short(message.headers.get(CAUSATION_ID)),
                        trace_id=_trace_id(message),
                    )
                )

    def take_report(self, service: str) -> TelemetryReport:
        """The report of what happened since the last one (and start a new interval)."""
        done, self._current = self._current, _Interval()
        return TelemetryReport(
            service=service,
            started=done.started,
            ended=self._current.started,
            published=[PublishedCount(type=t, count=n) for t, n in done.published.items()],
            handled=[
                HandledCount(queue=queue, type=type_, outcome=outcome, count=sum(b), buckets=b)
                for (queue, type_, outcome), b in done.handled.items()
            ],
            publishings=done.publishings,
            handlings=done.handlings,
            records_dropped=done.dropped,
        )

    async def run(self, bus: Bus, service: str | None = None) -> None:
        """Publish a report every ``interval`` seconds on ``bus`` as ``service``
        (default: ``bus.source``), an empty one too (a heartbeat: the dashboard sees
        the process is alive), until cancelled, and one last report then; a failed
        publish is logged and its report dropped."""
        name = service or bus.source
        try:
            while True:
                await asyncio.sleep(self.interval)
                await self._send(bus, name)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._send(bus, name))

    async def _send(self, bus: Bus, service: str) -> None:
        report = self.take_report(service)
        message = bus.codecs.envelope(report, source=service)
        try:
            await bus.broker.publish([message])
        except Exception as exc:
            log.warning("telemetry report not sent: %s", str(exc) or type(exc).__name__)
