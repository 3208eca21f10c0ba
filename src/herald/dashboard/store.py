"""The dashboard's history: telemetry reports kept in an embedded SQLite file.

Counts per interval (for rates and the timeline) are kept ``keep_counts`` seconds
(7 days by default), per-message records (for the trail) ``keep_records`` seconds
(1 day). Writes and reads run in a thread, off the event loop.

>>> import asyncio, tempfile, time
>>> from herald.telemetry.records import HandledCount, TelemetryReport
>>> counted = HandledCount(queue="payroll.a", type="a", outcome="acked", count=4,
...                        buckets=[0, 4])
>>> async def main() -> list[tuple[str, str, str, int]]:
...     with tempfile.TemporaryDirectory() as folder:
...         store = Store(f"{folder}/dashboard.db")
...         now = time.time()
...         await store.add(TelemetryReport(service="payroll", started=now - 2, ended=now,
...                                         handled=[counted]))
...         counts = await store.handled_counts(since=now - 10, until=now)
...         store.close()
...         return counts
>>> asyncio.run(main())
[('payroll', 'payroll.a', 'a', 4)]
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..telemetry.records import TelemetryReport

__all__ = ["Store"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS handled (
    ts REAL NOT NULL, service TEXT NOT NULL, queue TEXT NOT NULL, type TEXT NOT NULL,
    outcome TEXT NOT NULL, count INTEGER NOT NULL, buckets TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS handled_ts ON handled (ts);
CREATE TABLE IF NOT EXISTS published (
    ts REAL NOT NULL, service TEXT NOT NULL, type TEXT NOT NULL, count INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS published_ts ON published (ts);
CREATE TABLE IF NOT EXISTS heartbeats (service TEXT PRIMARY KEY, last REAL NOT NULL);
CREATE TABLE IF NOT EXISTS trail (
    ts REAL NOT NULL, kind TEXT NOT NULL, message_id TEXT NOT NULL, type TEXT NOT NULL,
    service TEXT NOT NULL, queue TEXT, attempt INTEGER, outcome TEXT, duration_ms REAL,
    error TEXT, subject TEXT, correlation_id TEXT, causation_id TEXT, trace_id TEXT);
CREATE INDEX IF NOT EXISTS trail_id ON trail (message_id);
CREATE INDEX IF NOT EXISTS trail_correlation ON trail (correlation_id);
CREATE INDEX IF NOT EXISTS trail_trace ON trail (trace_id);
CREATE INDEX IF NOT EXISTS trail_ts ON trail (ts);
"""
_PRUNE_EVERY = 60.0


class Store:
    """History of telemetry reports in the SQLite file at ``path`` (created if missing)."""

    def __init__(
        self, path: str | Path, *, keep_counts: float = 7 * 86_400, keep_records: float = 86_400
    ) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(path)
        self.keep_counts = keep_counts
        self.keep_records = keep_records
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._pruned = 0.0

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work(self._conn)

        return await asyncio.to_thread(locked)

    async def add(self, report: TelemetryReport) -> None:
        """Keep one report (and prune old rows once a minute)."""
        prune = time.monotonic() - self._pruned > _PRUNE_EVERY
        if prune:
            self._pruned = time.monotonic()
        await self._run(lambda conn: _insert(conn, report, self._cutoffs() if prune else None))

    def _cutoffs(self) -> tuple[float, float]:
        now = time.time()
        return now - self.keep_counts, now - self.keep_records

    async def heartbeats(self) -> dict[str, float]:
        """When each reporting service last reported (Unix seconds)."""
        rows = await self._run(
            lambda c: c.execute("SELECT service, last FROM heartbeats").fetchall()
        )
        return dict(rows)

    async def published_counts(self, since: float, until: float) -> list[tuple[str, str, int]]:
        """(service, event type, messages) published in ``[since, until]``."""
        rows: list[tuple[str, str, int]] = await self._run(
            lambda c: c.execute(
                "SELECT service, type, sum(count) FROM published WHERE ts > ? AND ts <= ?"
                " GROUP BY service, type ORDER BY service, type",
                (since, until),
            ).fetchall()
        )
        return rows

    async def handled_counts(self, since: float, until: float) -> list[tuple[str, str, str, int]]:
        """(service, queue, event type, deliveries) handled in ``[since, until]``."""
        rows: list[tuple[str, str, str, int]] = await self._run(
            lambda c: c.execute(
                "SELECT service, queue, type, sum(count) FROM handled WHERE ts > ? AND ts <= ?"
                " GROUP BY service, queue, type ORDER BY service, queue, type",
                (since, until),
            ).fetchall()
        )
        return rows

    async def handled_rows(self, since: float) -> list[tuple[float, str, str, int, list[int]]]:
        """(time, service, outcome, count, latency buckets) of every report since ``since``."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT ts, service, outcome, count, buckets FROM handled WHERE ts > ? ORDER BY ts",
                (since,),
            ).fetchall()
        )
        return [(ts, s, o, n, json.loads(b)) for ts, s, o, n, b in rows]

    async def published_rows(self, since: float) -> list[tuple[float, str, int]]:
        """(time, service, count) of every published count since ``since``."""
        rows: list[tuple[float, str, int]] = await self._run(
            lambda c: c.execute(
                "SELECT ts, service, count FROM published WHERE ts > ? ORDER BY ts", (since,)
            ).fetchall()
        )
        return rows

    async def trail(self, key: str, limit: int = 200) -> list[dict[str, Any]]:
        """Records of messages whose id, correlation id or trace id is ``key``, and of
        messages they caused, oldest first."""

        def query(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            conn.row_factory = sqlite3.Row
            try:
                rows = conn.execute(
                    "SELECT * FROM trail WHERE message_id = :k OR correlation_id = :k"
                    " OR trace_id = :k OR causation_id = :k ORDER BY ts LIMIT :n",
                    {"k": key, "n": limit},
                ).fetchall()
                return [dict(row) for row in rows]
            finally:
                conn.row_factory = None

        return await self._run(query)


def _insert(
    conn: sqlite3.Connection, report: TelemetryReport, cutoffs: tuple[float, float] | None
) -> None:
    ts, service = report.ended, report.service
    with conn:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO handled VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (ts, service, c.queue, c.type, c.outcome, c.count, json.dumps(c.buckets))
                for c in report.handled
            ],
        )
        conn.executemany(
            "INSERT INTO published VALUES (?, ?, ?, ?)",
            [(ts, service, c.type, c.count) for c in report.published],
        )
        conn.execute(
            "INSERT INTO heartbeats VALUES (?, ?) ON CONFLICT (service)"
            " DO UPDATE SET last = max(last, excluded.last)",
            (service, ts),
        )
        conn.executemany(
            "INSERT INTO trail (ts, kind, message_id, type, service, subject, correlation_id,"
            " causation_id, trace_id) VALUES (?, 'published', ?, ?, ?, ?, ?, ?, ?)",
            [
                (p.time, p.id, p.type, service, p.subject, p.correlation_id, p.causation_id,
                 p.trace_id)
                for p in report.publishings
            ],
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO trail (ts, kind, message_id, type, service, queue, attempt, outcome,"
            " duration_ms, error, correlation_id, trace_id)"
            " VALUES (?, 'handled', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (h.time, h.id, h.type, h.service, h.queue, h.attempt, h.outcome, h.duration_ms,
                 h.error, h.correlation_id, h.trace_id)
                for h in report.handlings
            ],
        )  # fmt: skip
        if cutoffs is not None:
            counts, records = cutoffs
            conn.execute("DELETE FROM handled WHERE ts < ?", (counts,))
            conn.execute("DELETE FROM published WHERE ts < ?", (counts,))
            conn.execute("DELETE FROM trail WHERE ts < ?", (records,))
