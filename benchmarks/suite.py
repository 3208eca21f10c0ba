"""A suite: the contenders for one broker, their targets, and running them all.

A contender that cannot run (server down, adapter missing) becomes an
``unavailable: <error>`` row; one that fails mid-measurement a ``failed: <error>``
row. Neither stops the other contenders or suites. With ``--repeat N`` the suite runs
N rounds, each measuring every contender in turn, and keeps each one's median run:
contenders compared share the host's conditions, which matters on a shared machine.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .harness import LATENCY, THROUGHPUT, Contender, Plan
from .process import measure
from .report import Row, Target, judge, render

__all__ = ["ALL", "QUICK", "SUITES", "Options", "Suite", "load_suite", "run_suite", "run_suites"]

CHECK_TIMEOUT = 15.0
"""Seconds to connect before a contender counts as unavailable (and to clean up after)."""
CLEANUP_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Options:
    events: int = 50_000
    window: int = 500
    rate: float = 1000.0
    duration: float = 10.0
    timeout: float = 60.0
    """Seconds a run may take beyond its schedule before it counts as failed."""
    repeat: int = 1
    """Rounds of runs, contenders interleaved; the median run of each is reported (all
    in ``details.runs``)."""
    only: tuple[str, ...] = ()
    """Contender names to run (all when empty)."""


QUICK = Options(events=500, window=100, rate=500.0, duration=0.5, timeout=60.0)
"""Tiny runs, to check it works (``--quick``)."""


@dataclass(frozen=True)
class Suite:
    """Contenders compared on one kind of broker; ``baseline`` names one of them."""

    name: str
    contenders: Sequence[type[Contender]]
    baseline: str
    targets: dict[tuple[str, str], Sequence[Target]] = field(default_factory=dict)


SUITES = {
    "memory": "benchmarks.memory_bench",
    "sqlite": "benchmarks.sqlite_bench",
    "amqp": "benchmarks.amqp_bench",
    "nats": "benchmarks.nats_bench",
    "redis": "benchmarks.redis_bench",
    "sqs": "benchmarks.sqs_bench",
    "kafka": "benchmarks.kafka_bench",
}
ALL = ("sqlite", "amqp", "nats", "redis")
"""What ``all`` runs."""


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".strip().rstrip(":")


def _plans(cls: type[Contender], options: Options) -> list[Plan]:
    cap = cls.max_events or options.events
    steady = max(1, int(options.rate * options.duration))
    return [
        Plan(THROUGHPUT, min(options.events, cap), window=options.window, timeout=options.timeout),
        Plan(
            LATENCY,
            min(steady, cap),
            rate=options.rate,
            timeout=options.duration + options.timeout / 2,
        ),
    ]


def _check(cls: type[Contender], run_id: str) -> str | None:
    """Why the contender cannot run here, or None."""
    try:
        asyncio.run(asyncio.wait_for(cls(run_id).check(), CHECK_TIMEOUT))
    except Exception as exc:
        return _short(exc) if str(exc) else f"{type(exc).__name__} after {CHECK_TIMEOUT:.0f}s"
    return None


def _cleanup(cls: type[Contender], run_id: str) -> None:
    try:
        asyncio.run(asyncio.wait_for(cls(run_id).cleanup(), CLEANUP_TIMEOUT))
    except Exception as exc:
        _log(f"  {cls.name}: cleanup failed: {_short(exc)}")


def _median_run(plan: Plan, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median figure: events/s for throughput, p99 for latency."""
    failed = [r for r in results if r["error"]]
    if failed:
        return failed[0]
    key = "events_per_s" if plan.workload == THROUGHPUT else "p99_ms"
    ordered = sorted(results, key=lambda r: float(r[key]))
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    if len(results) > 1:
        chosen["runs"] = [round(float(r[key]), 3) for r in results]
    return chosen


def _measure_rounds(
    suite: Suite, classes: list[type[Contender]], run_id: str, options: Options
) -> list[Row]:
    """``options.repeat`` rounds; in each, every workload, every contender in turn (so
    the contenders compared share the host's conditions); the median run of each kept.
    A contender that fails a workload is not measured on it again."""
    plans = {cls: _plans(cls, options) for cls in classes}
    results: dict[tuple[type[Contender], int], list[dict[str, Any]]] = {}
    failed: dict[tuple[type[Contender], int], Row] = {}
    for round_no in range(max(1, options.repeat)):
        for index in range(2):
            for cls in classes:
                plan = plans[cls][index]
                if (cls, index) in failed:
                    continue
                shown = f" (round {round_no + 1}/{options.repeat})" if options.repeat > 1 else ""
                _log(f"  {cls.name}: {plan.workload}, {plan.events:,} events{shown} ...")
                try:
                    result = measure(cls, run_id, replace(plan, not_before_ns=time.time_ns()))
                except Exception as exc:
                    _log(f"  {cls.name}: failed: {_short(exc)}")
                    failed[cls, index] = _row(suite, cls, plan, status=f"failed: {_short(exc)}")
                    continue
                results.setdefault((cls, index), []).append(result)
                if result["error"]:
                    failed[cls, index] = _result_row(suite, cls, plan, result)
    rows = []
    for cls in classes:
        for index, plan in enumerate(plans[cls]):
            row = failed.get((cls, index))
            if row is None:
                row = _result_row(suite, cls, plan, _median_run(plan, results[cls, index]))
            rows.append(row)
    return rows


def _result_row(suite: Suite, cls: type[Contender], plan: Plan, result: dict[str, Any]) -> Row:
    row = _row(suite, cls, plan)
    row.details = {k: v for k, v in result.items() if k not in ("error", "note")}
    if result["error"]:
        _log(f"  {cls.name}: failed: {result['error']}")
        row.status = f"failed: {result['error']}"
        return row
    row.seconds = result["seconds"]
    row.events_per_s = result["events_per_s"]
    row.p50_ms = result["p50_ms"]
    row.p99_ms = result["p99_ms"]
    notes = [result["note"]] if result["note"] else []
    if plan.workload == LATENCY and row.events_per_s < 0.9 * plan.rate:
        notes.append(f"could not keep up with {plan.rate:,.0f}/s")
    row.note = "; ".join(notes)
    if row.note:
        _log(f"  {cls.name}: {row.note}")
    return row


def _row(suite: Suite, cls: type[Contender], plan: Plan, status: str = "ok") -> Row:
    return Row(
        suite=suite.name,
        workload=plan.workload,
        contender=cls.name,
        baseline=cls.name == suite.baseline,
        events=plan.events,
        status=status,
    )


def run_suite(suite: Suite, options: Options) -> list[Row]:
    """Measure every contender of ``suite``; rows ordered by workload, then contender."""
    run_id = f"{time.strftime('%H%M%S')}{os.getpid()}"
    _log(f"[{suite.name}] run {run_id}")
    rows: list[Row] = []
    classes: list[type[Contender]] = []
    for cls in suite.contenders:
        if options.only and cls.name not in options.only:
            continue
        why = _check(cls, run_id)
        if why is None:
            classes.append(cls)
            continue
        _log(f"  {cls.name}: unavailable: {why}")
        rows += [
            _row(suite, cls, plan, status=f"unavailable: {why}") for plan in _plans(cls, options)
        ]
    try:
        rows += _measure_rounds(suite, classes, run_id, options)
    finally:
        for cls in classes:
            _cleanup(cls, run_id)
    order = {cls.name: i for i, cls in enumerate(suite.contenders)}
    rows.sort(key=lambda r: order[r.contender])
    judge(rows, suite.targets)
    order = {THROUGHPUT: 0, LATENCY: 1}
    return sorted(rows, key=lambda r: order[r.workload])


def load_suite(name: str) -> Suite:
    """The suite of :data:`SUITES` named ``name`` (ImportError if its client is missing)."""
    suite: Suite = importlib.import_module(SUITES[name]).SUITE
    return suite


def run_suites(names: Sequence[str], options: Options) -> list[Row]:
    """Run each suite, printing its table as it finishes; all their rows."""
    rows: list[Row] = []
    for name in names:
        try:
            suite_rows = run_suite(load_suite(name), options)
        except ImportError as exc:
            suite_rows = [Row(name, THROUGHPUT, "*", False, 0, status=f"unavailable: {exc}")]
        print(f"\n{name}\n{render(suite_rows)}", flush=True)
        rows.extend(suite_rows)
    return rows
