"""What a telemetry report carries: counts, latency buckets and one record per message.

A report covers one process for one interval. Counts and latency buckets are exact;
per-message records (for the message trail) are capped per report, and the report
says how many were left out.

>>> counted = HandledCount(queue="payroll.a", type="a", outcome="acked", count=3)
>>> report = TelemetryReport(service="payroll", started=0.0, ended=2.0, handled=[counted])
>>> TelemetryReport.model_validate_json(report.model_dump_json()).handled[0].count
3
>>> percentile([0, 5, 5, 0], 0.5), percentile([0, 0, 0, 0], 0.5) is None
(2.0, True)
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from ..event import Event

__all__ = [
    "BUCKETS_MS",
    "REPORT_TYPE",
    "HandledCount",
    "Handling",
    "PublishedCount",
    "Publishing",
    "TelemetryReport",
    "bucket_of",
    "percentile",
]

REPORT_TYPE = "herald.telemetry.report"
BUCKETS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000,
)  # fmt: skip
"""Upper bounds (milliseconds) of the handling-latency buckets; one more bucket holds
everything slower."""


def bucket_of(duration_ms: float) -> int:
    """The index of the latency bucket ``duration_ms`` falls in."""
    for index, bound in enumerate(BUCKETS_MS):
        if duration_ms <= bound:
            return index
    return len(BUCKETS_MS)


def percentile(buckets: Sequence[int], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding quantile ``q``; None when empty.
    The slowest bucket has no bound: the largest finite one times two stands for it."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        seen += count
        if seen >= rank and count:
            return float(BUCKETS_MS[index]) if index < len(BUCKETS_MS) else BUCKETS_MS[-1] * 2
    return BUCKETS_MS[-1] * 2


class HandledCount(BaseModel):
    """Deliveries of one queue and event type that ended with ``outcome``."""

    queue: str
    type: str
    outcome: str
    count: int
    buckets: list[int] = Field(default_factory=list)


class PublishedCount(BaseModel):
    """Messages of one event type this process published."""

    type: str
    count: int


class Publishing(BaseModel):
    """One published message, for the trail."""

    id: str
    type: str
    source: str
    time: float
    subject: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    trace_id: str | None = None


class Handling(BaseModel):
    """One delivery handled (or not) by a service, for the trail."""

    id: str
    type: str
    service: str
    queue: str
    attempt: int
    outcome: str
    duration_ms: float
    time: float
    error: str | None = None
    correlation_id: str | None = None
    trace_id: str | None = None


class TelemetryReport(Event, type=REPORT_TYPE):
    """What one process did between ``started`` and ``ended`` (Unix seconds)."""

    service: str
    started: float
    ended: float
    published: list[PublishedCount] = Field(default_factory=list)
    handled: list[HandledCount] = Field(default_factory=list)
    publishings: list[Publishing] = Field(default_factory=list)
    handlings: list[Handling] = Field(default_factory=list)
    records_dropped: int = 0
