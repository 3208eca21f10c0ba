"""Result rows, targets judged against them, the printed table and the JSON file.

Ratios are against the suite's baseline contender measured in the same run:
``events/s ÷ baseline events/s`` for throughput (higher is better) and
``p99 ÷ baseline p99`` for latency (lower is better).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .harness import LATENCY, THROUGHPUT

__all__ = [
    "LEGEND",
    "Row",
    "Target",
    "at_least",
    "faster_than",
    "judge",
    "p99_at_most",
    "p99_within",
    "render",
    "write_json",
]


@dataclass(slots=True)
class Row:
    """One contender on one workload."""

    suite: str
    workload: str
    contender: str
    baseline: bool
    events: int
    status: str = "ok"
    """``ok``, ``failed: <why>`` or ``unavailable: <why>``."""
    seconds: float | None = None
    events_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


Peers = dict[str, Row]


@dataclass(frozen=True, slots=True)
class Target:
    """A goal for one row; ``check`` returns None when it cannot be judged."""

    text: str
    check: Callable[[Row, Peers], bool | None]


def at_least(events_per_s: float) -> Target:
    return Target(
        f">= {events_per_s:,.0f} ev/s",
        lambda row, _: row.events_per_s is not None and row.events_per_s >= events_per_s,
    )


def p99_at_most(ms: float) -> Target:
    return Target(f"p99 <= {ms:g} ms", lambda row, _: row.p99_ms is not None and row.p99_ms <= ms)


def faster_than(other: str, factor: float = 1.0) -> Target:
    def check(row: Row, peers: Peers) -> bool | None:
        peer = peers.get(other)
        if peer is None or peer.events_per_s is None or row.events_per_s is None:
            return None
        return row.events_per_s >= factor * peer.events_per_s

    return Target(f">= {factor:g}x {other}", check)


def p99_within(other: str, plus_ms: float) -> Target:
    def check(row: Row, peers: Peers) -> bool | None:
        peer = peers.get(other)
        if peer is None or peer.p99_ms is None or row.p99_ms is None:
            return None
        return row.p99_ms <= peer.p99_ms + plus_ms

    return Target(f"p99 <= {other} + {plus_ms:g} ms", check)


def judge(rows: Sequence[Row], targets: dict[tuple[str, str], Sequence[Target]]) -> None:
    """Fill in ratios against the baseline and each row's target verdict."""
    for workload in (THROUGHPUT, LATENCY):
        peers = {r.contender: r for r in rows if r.workload == workload and r.ok}
        base = next((r for r in peers.values() if r.baseline), None)
        for row in (r for r in rows if r.workload == workload):
            if row.ok and base is not None:
                if workload == THROUGHPUT and row.events_per_s and base.events_per_s:
                    row.ratio = row.events_per_s / base.events_per_s
                elif workload == LATENCY and row.p99_ms is not None and base.p99_ms:
                    row.ratio = row.p99_ms / base.p99_ms
            goals = targets.get((row.contender, workload), ())
            if not goals:
                continue
            row.target = " and ".join(goal.text for goal in goals)
            if not row.ok:
                continue
            verdicts = [goal.check(row, peers) for goal in goals]
            row.met = None if None in verdicts else all(verdicts)


_COLUMNS = (
    ("workload", "<"),
    ("contender", "<"),
    ("events", ">"),
    ("seconds", ">"),
    ("events/s", ">"),
    ("p50 ms", ">"),
    ("p99 ms", ">"),
    ("ratio", ">"),
    ("target", "<"),
    ("result", "<"),
)


def _cells(row: Row) -> list[str]:
    def num(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    verdict = {True: "met", False: "MISSED", None: "n/a" if row.target else ""}[row.met]
    if not row.ok:
        verdict = row.status if len(row.status) <= 90 else row.status[:87] + "..."
    elif row.note:
        verdict = f"{verdict} ({row.note})" if verdict else row.note

    name = row.contender + (" (baseline)" if row.baseline else "")
    ratio = "-" if row.ratio is None else f"{row.ratio:.3g}x"
    return [
        f"{row.suite} {row.workload}",
        name,
        f"{row.events:,}",
        num(row.seconds, ".2f"),
        num(row.events_per_s, ",.0f"),
        num(row.p50_ms, ".2f"),
        num(row.p99_ms, ".2f"),
        ratio,
        row.target,
        verdict,
    ]


LEGEND = """\
throughput: N events published in windows (see each suite), timed from the first publish
  to the last event handled; its p50/p99 are end-to-end latencies under that burst.
latency: one publish per event at a steady rate; p50/p99 of handled time - publish time.
ratio: events/s vs the baseline (throughput), p99 vs the baseline's p99 (latency)."""


def render(rows: Iterable[Row]) -> str:
    """The rows as an aligned text table."""
    table = [[title for title, _ in _COLUMNS]] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    lines = []
    for index, line in enumerate(table):
        cells = [
            f"{cell:{align}{width}}"
            for cell, (_, align), width in zip(line, _COLUMNS, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_json(path: Path, rows: Sequence[Row], settings: dict[str, Any]) -> None:
    """Write the run's rows and settings to ``path`` (directories created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "generated_at": datetime.now(UTC).isoformat(),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "settings": settings,
        "results": [asdict(row) for row in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
