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
        [
            "--events",
            "200",
            "--rounds",
            "1",
            "--modes",
            "off,tracing-api,tracing-nosettle,both-sampled",
            "--spans",
            "100",
        ]
    )
    assert set(medians) == {"off", "tracing-api", "tracing-nosettle", "both-sampled"}
    spans = [line for line in capsys.readouterr().out.splitlines() if line.startswith("span ")]
    ways = ("SDK recording", "SDK not sampled", "API only (no SDK)")
    assert [line[5:].split("  ")[0].strip() for line in spans] == list(ways)
    assert all(float(line.split(" us CPU")[0].split()[-1]) > 0 for line in spans)
    with pytest.raises(SystemExit):
        observability_bench(["--modes", "metrics,nonsense"])
    assert "modes from off, metrics" in capsys.readouterr().err


def test_costmodel_plan_varies_one_dimension_at_a_time() -> None:
    from benchmarks.costmodel import Config, points  # noqa: PLC0415

    plan = points(Config())
    assert {p.broker for p in plan} == {"memory", "sqlite", "amqp", "nats", "redis", "kafka", "sqs"}
    for broker in ("amqp", "sqs"):
        mine = [p for p in plan if p.broker == broker]
        assert [(p.dimension, p.value) for p in mine] == [
            ("payload", 200), ("payload", 10240), ("payload", 1 << 20),
            ("consumers", 1), ("consumers", 2), ("consumers", 4),
            ("services", 1), ("services", 10), ("services", 100),
        ]  # fmt: skip
        for p in mine:
            others = {"payload": 200, "consumers": 1, "services": 1}
            del others[p.dimension]
            assert all(getattr(p, name) == value for name, value in others.items()), p
    amqp = {(p.dimension, p.value): p.events for p in plan if p.broker == "amqp"}
    sqs = {(p.dimension, p.value): p.events for p in plan if p.broker == "sqs"}
    assert amqp[("payload", 1 << 20)] * (1 << 20) <= 32 << 20 < amqp[("payload", 200)] * (1 << 20)
    assert sqs[("consumers", 4)] < amqp[("consumers", 4)]


def test_quick_costmodel_writes_the_page_and_its_plots(tmp_path: Path) -> None:
    page_path, json_path = tmp_path / "docs" / "performance.md", tmp_path / "costmodel.json"
    files = ["--output", str(page_path), "--json", str(json_path)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.costmodel", "--quick", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    page = page_path.read_text()
    for heading in (
        "## The host",
        "## Against the raw clients",
        "### Throughput against payload size",
        "### Throughput against consumer processes",
        "### Throughput against services and queues",
        "### An idle service",
        "### A consumer behind a backlog of large bodies",
    ):
        assert heading in page
    assert "2 CPUs" in page or f"{os.cpu_count()} CPUs" in page
    assert "memory throughput  herald" in page
    assert "| broker | 200 B | 10 KiB |" in page
    assert "| broker | 1 | 2 |" in page
    assert "| broker | 1 | 3 |" in page
    for name in ("payload", "consumers", "services"):
        image = page_path.parent / "performance" / f"{name}.png"
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](performance/{name}.png)" in page
    document = json.loads(json_path.read_text())
    sweep = {
        (r["point"]["broker"], r["point"]["dimension"], r["point"][r["point"]["dimension"]]): r
        for r in document["sweep"]
    }
    assert set(sweep) == {
        (broker, dimension, value)
        for broker in ("memory", "sqlite")
        for dimension, values in (
            ("payload", (200, 10240)),
            ("consumers", (1, 2)),
            ("services", (1, 3)),
        )
        for value in values
    }
    for key, row in sweep.items():
        if key == ("memory", "consumers", 2):
            assert row["status"].startswith("n/a"), row
            continue
        assert row["status"] == "ok", row
        assert row["handled"] >= row["point"]["events"]
        assert row["events_per_s"] > 0
        assert f"| {key[0]} | " in page
    (idle,) = document["idle"]
    assert idle["status"] == "ok" and idle["rss"] > 0, idle
    (backlog,) = document["backlog"]
    assert backlog["status"] == "ok", backlog
    assert backlog["peak_rss"] >= backlog["baseline_rss"] > 0
    # The runtime's promise: bodies held at once stay under prefetch_bytes plus one body.
    assert 1 <= backlog["held_max"] * backlog["body"] <= backlog["bound"] + backlog["body"]
