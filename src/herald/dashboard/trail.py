"""The message trail: where a message (or every message of a correlation id or trace)
went, from the per-message records in the telemetry reports.

>>> rows = [
...     {"kind": "published", "message_id": "m1", "type": "a", "service": "hr", "ts": 1.0,
...      "trace_id": "t1", "queue": None, "attempt": None, "outcome": None, "error": None,
...      "duration_ms": None},
...     {"kind": "handled", "message_id": "m1", "type": "a", "service": "payroll", "ts": 2.0,
...      "trace_id": "t1", "queue": "payroll.a", "attempt": 1, "outcome": "retried",
...      "error": "boom", "duration_ms": 3.0},
...     {"kind": "handled", "message_id": "m1", "type": "a", "service": "payroll", "ts": 3.0,
...      "trace_id": "t1", "queue": "payroll.a", "attempt": 2, "outcome": "acked",
...      "error": None, "duration_ms": 2.0},
... ]
>>> [m] = build_trail(rows)
>>> m.published_by, [(d.queue, d.attempts, d.outcome) for d in m.deliveries], m.trace_ids
('hr', [('payroll.a', 2, 'acked')], ['t1'])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Delivery", "MessageTrail", "build_trail"]


@dataclass
class Delivery:
    """A message's deliveries to one queue: attempts, how the last ended, errors."""

    service: str
    queue: str
    attempts: int = 0
    outcome: str = ""
    errors: list[str] = field(default_factory=list)
    first: float = 0.0
    last: float = 0.0
    duration_ms: float = 0.0


@dataclass
class MessageTrail:
    """One message: who published it, where it was delivered, its traces."""

    id: str
    type: str
    published_by: str | None = None
    published_at: float | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    trace_ids: list[str] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    first: float = 0.0


def build_trail(rows: Iterable[Mapping[str, Any]]) -> list[MessageTrail]:
    """Messages in the order first seen, from trail records (oldest first)."""
    messages: dict[str, MessageTrail] = {}
    for row in sorted(rows, key=lambda r: float(r["ts"])):
        trail = messages.setdefault(
            row["message_id"], MessageTrail(row["message_id"], row["type"], first=row["ts"])
        )
        trace = row.get("trace_id")
        if trace and trace not in trail.trace_ids:
            trail.trace_ids.append(trace)
        trail.correlation_id = trail.correlation_id or row.get("correlation_id")
        if row["kind"] == "published":
            trail.published_by = row["service"]
            trail.published_at = row["ts"]
            trail.causation_id = row.get("causation_id")
            continue
        delivery = next((d for d in trail.deliveries if d.queue == row["queue"]), None)
        if delivery is None:
            delivery = Delivery(row["service"], row["queue"], first=row["ts"])
            trail.deliveries.append(delivery)
        delivery.attempts = max(delivery.attempts, int(row["attempt"] or 0))
        delivery.outcome = row["outcome"] or ""
        delivery.last = row["ts"]
        delivery.duration_ms += float(row["duration_ms"] or 0.0)
        if row["error"]:
            delivery.errors.append(row["error"])
    return sorted(messages.values(), key=lambda m: m.first)
