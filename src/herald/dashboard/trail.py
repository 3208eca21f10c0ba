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
>>> m.published_by, m.delivered_to, m.trace_ids
('hr', ['payroll'], ['t1'])
>>> [(d.queue, d.attempt, d.outcome) for d in m.deliveries]
[('payroll.a', 1, 'retried'), ('payroll.a', 2, 'acked')]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Delivery", "MessageTrail", "build_trail"]


@dataclass
class Delivery:
    """One delivery of a message to a queue, and how it ended."""

    service: str
    queue: str
    attempt: int
    outcome: str
    time: float
    duration_ms: float
    error: str | None = None


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

    @property
    def delivered_to(self) -> list[str]:
        """The services it was delivered to, in the order of their first delivery."""
        return list(dict.fromkeys(d.service for d in self.deliveries))


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
        trail.deliveries.append(
            Delivery(
                service=row["service"],
                queue=row["queue"],
                attempt=int(row["attempt"] or 0),
                outcome=row["outcome"] or "",
                time=float(row["ts"]),
                duration_ms=float(row["duration_ms"] or 0.0),
                error=row["error"],
            )
        )
    return sorted(messages.values(), key=lambda m: m.first)
