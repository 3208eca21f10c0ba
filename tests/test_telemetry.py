"""Telemetry reports: what they count, the trail records they carry, their limits."""

from __future__ import annotations

import asyncio
import uuid

import herald
from herald.headers import CORRELATION_ID
from herald.telemetry import REPORT_TYPE, TelemetryMiddleware, TelemetryReport
from herald.testing import eventually

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Noted(herald.Event, type="telemetry.noted"):
    n: int


def url() -> str:
    return f"memory://telemetry-{uuid.uuid4().hex[:8]}"


async def test_a_report_counts_outcomes_and_records_the_trail() -> None:
    telemetry = TelemetryMiddleware(interval=60, max_records=100)
    service = herald.Service("notes")

    @service.on(Noted, attempts=1)
    async def note(event: Noted) -> None:
        if event.n < 0:
            raise herald.Reject("negative")

    async with herald.connect(url(), source="notes", middleware=[telemetry]) as bus:
        worker = await bus.start(service)
        headers = {"traceparent": TRACEPARENT, CORRELATION_ID: "order-7"}
        sent = await bus.publish(Noted(n=1), headers=headers)
        await bus.publish(Noted(n=-1))
        await eventually(lambda: worker.handled == 2, timeout=5, what="two deliveries")
        await worker.stop()
        report = telemetry.take_report(bus.source)
    outcomes = {c.outcome: c.count for c in report.handled}
    assert outcomes == {"acked": 1, "dead-lettered": 1}
    assert [(p.type, p.count) for p in report.published] == [("telemetry.noted", 2)]
    [published] = [p for p in report.publishings if p.id == sent.id]
    assert (published.trace_id, published.correlation_id) == (TRACEPARENT[3:35], "order-7")
    [handling] = [h for h in report.handlings if h.id == sent.id]
    assert (handling.service, handling.queue, handling.attempt) == (
        "notes",
        "notes.telemetry.noted",
        1,
    )
    [failed] = [h for h in report.handlings if h.outcome == "dead-lettered"]
    assert failed.error is not None and "negative" in failed.error
    assert telemetry.take_report("notes").handled == []  # a new interval began


async def test_records_are_capped_and_the_rest_counted() -> None:
    telemetry = TelemetryMiddleware(interval=60, max_records=3)
    async with herald.connect(url(), middleware=[telemetry]) as bus:
        await bus.publish_many(Noted(n=n) for n in range(5))
        report = telemetry.take_report("hr")
    assert len(report.publishings) == 3
    assert report.records_dropped == 2
    assert report.published[0].count == 5  # counts stay exact


async def test_reports_go_on_the_bus_and_are_not_reported_themselves() -> None:
    telemetry = TelemetryMiddleware(interval=0.05)
    async with herald.connect(url(), source="hr", middleware=[telemetry]) as bus:
        listener = herald.Subscription("watch", "reports", (REPORT_TYPE,), durable=False)
        await bus.broker.declare(listener)
        reporting = asyncio.create_task(telemetry.run(bus))
        reports: list[TelemetryReport] = []
        async for delivery in bus.broker.consume(listener, herald.Prefetch()):
            await delivery.ack()
            reports.append(TelemetryReport.model_validate_json(delivery.message.body))
            if len(reports) == 3:
                break
        reporting.cancel()
        await asyncio.gather(reporting, return_exceptions=True)
    assert all(r.service == "hr" for r in reports)
    assert all(r.published == [] for r in reports)  # heartbeats; reports count not
