"""Smoke tests of the benchmark suite: tiny runs, asserting structure, never timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import LATENCY, THROUGHPUT, percentile  # noqa: E402
from benchmarks.observability_bench import main as observability_bench  # noqa: E402
from benchmarks.report import Row, at_least, faster_than, judge, p99_within, render  # noqa: E402

COLUMNS = ["workload", "contender", "events", "seconds", "events/s", "p50 ms", "p99 ms"]
ROW_KEYS = {"suite", "workload", "contender", "baseline", "events", "status", "seconds"}


def run_cli(
    *args: str, output: Path, env: dict[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    """``python -m benchmarks ARGS --quick``: its stdout and its results file."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args, "--quick", "--output", str(output)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(output.read_text())


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) == 0.0


def test_judge_fills_ratios_and_verdicts() -> None:
    rows = [
        Row("s", THROUGHPUT, "raw", True, 10, events_per_s=1000.0),
        Row("s", THROUGHPUT, "herald", False, 10, events_per_s=1500.0),
        Row("s", LATENCY, "raw", True, 10, p99_ms=2.0),
        Row("s", LATENCY, "herald", False, 10, p99_ms=4.0),
        Row("s", THROUGHPUT, "other", False, 10, status="unavailable: down"),
    ]
    judge(
        rows,
        {
            ("herald", THROUGHPUT): [faster_than("raw"), at_least(1200)],
            ("herald", LATENCY): [p99_within("raw", 1.0)],
            ("other", THROUGHPUT): [at_least(1)],
        },
    )
    assert rows[1].ratio == 1.5
    assert rows[1].met is True
    assert rows[3].ratio == 2.0
    assert rows[3].met is False
    assert rows[4].met is None
    table = render(rows)
    header = table.splitlines()[0].split()
    assert header[:2] == ["workload", "contender"]
    assert "MISSED" in table
    assert "unavailable: down" in table


def test_quick_memory_run_reports_every_contender(tmp_path: Path) -> None:
    stdout, document = run_cli("memory", "--repeat", "2", output=tmp_path / "results.json")
    for column in COLUMNS:
        assert column in stdout
    rows = document["results"]
    assert {(r["contender"], r["workload"]) for r in rows} == {
        (name, workload)
        for name in ("asyncio.Queue", "herald")
        for workload in (THROUGHPUT, LATENCY)
    }
    for row in rows:
        assert row.keys() >= ROW_KEYS
        assert row["status"] == "ok", row
        assert row["details"]["handled"] == row["events"]
        assert row["events_per_s"] > 0
        assert 0 <= row["p50_ms"] <= row["p99_ms"]
        assert len(row["details"]["runs"]) == 2
        assert row["details"]["consumer_cpu_us_per_event"] > 0
        assert row["details"]["publisher_cpu_us_per_event"] > 0
    assert document["settings"]["quick"] is True
    assert document["settings"]["repeat"] == 2


def test_quick_sqlite_run_uses_two_processes_per_contender(tmp_path: Path) -> None:
    stdout, document = run_cli(
        "sqlite", "--only", "persist-queue,herald", output=tmp_path / "results.json"
    )
    assert "persist-queue (baseline)" in stdout
    rows = {(r["contender"], r["workload"]): r for r in document["results"]}
    assert set(rows) == {
        (name, workload)
        for name in ("persist-queue", "herald")
        for workload in (THROUGHPUT, LATENCY)
    }
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["details"]["handled"] == row["events"]
    herald = rows[("herald", THROUGHPUT)]
    assert herald["target"] == ">= 10,000 ev/s"
    assert herald["met"] in (True, False)
    assert herald["ratio"] is not None


def test_unreachable_server_is_reported_not_fatal(tmp_path: Path) -> None:
    stdout, document = run_cli(
        "redis",
        output=tmp_path / "results.json",
        env={"BENCH_REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    rows = document["results"]
    assert {r["contender"] for r in rows} == {"redis-py", "faststream", "herald"}
    for row in rows:
        assert row["status"].startswith("unavailable: "), row
        assert row["events_per_s"] is None
        assert row["met"] is None
    assert "unavailable: " in stdout


def test_observability_bench_runs_every_way(capsys: pytest.CaptureFixture[str]) -> None:
    medians = observability_bench(["--events", "300", "--rounds", "2"])
    assert set(medians) == {"off", "metrics", "tracing", "both"}
    assert all(rate > 0 for rate in medians.values())
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["off", "metrics", "tracing", "both"]
    assert all(len(line.split("(")[1].split()) == 2 for line in lines[:4])  # two runs each
    assert lines[4] == "2 interleaved rounds of 300 events on memory://"


def test_observability_bench_runs_the_modes_asked_for(capsys: pytest.CaptureFixture[str]) -> None:
    medians = observability_bench(
        ["--events", "200", "--rounds", "1", "--modes", "off,tracing-api,tracing-nosettle"]
    )
    assert set(medians) == {"off", "tracing-api", "tracing-nosettle"}
    with pytest.raises(SystemExit):
        observability_bench(["--modes", "metrics,nonsense"])
    assert "modes from off, metrics" in capsys.readouterr().err
