"""Smoke tests of the HR-platform benchmarks: each module run with ``--quick`` as a
subprocess, asserting exit status and the table's structure and labels, never timing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .servers import require_port

ROOT = Path(__file__).resolve().parents[1]
SERVERS = {"RabbitMQ": 5672, "NATS": 4222, "PostgreSQL": 5432}


def require_servers(*names: str) -> None:
    for name in names:
        require_port(SERVERS[name], name)


def run_quick(module: str) -> list[dict[str, str]]:
    """Run ``python -m benchmarks.<module> --quick``; its table rows as header->cell dicts."""
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--quick"],
        check=False,
        cwd=ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    rule = next(i for i, line in enumerate(lines) if line and set(line) <= {"-", " "})
    headers = re.split(r"\s{2,}", lines[rule - 1].strip())
    rows = []
    for line in lines[rule + 1 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(headers), f"ragged row {line!r} under {headers}"
        rows.append(dict(zip(headers, cells, strict=True)))
    return rows


def assert_all_ok(rows: list[dict[str, str]]) -> None:
    failed = [row for row in rows if any(cell.startswith("failed") for cell in row.values())]
    assert not failed, failed


def test_rpc_bench_quick() -> None:
    require_servers("RabbitMQ", "NATS")
    rows = run_quick("rpc_bench")
    assert [row["contender"] for row in rows] == [
        "raw aio-pika direct reply-to",
        "herald amqp",
        "herald amqp durable=False",
        "raw nats-py nc.request",
        "herald nats",
        "herald nats durable=False",
        "herald sqlite (ref)",
        "herald memory (ref)",
    ]
    assert set(rows[0]) == {
        "contender",
        "calls",
        "p50 ms",
        "p99 ms",
        "calls/s",
        "p50 ratio",
        "p99 ratio",
    }
    assert_all_ok(rows)
    assert {row["calls"] for row in rows} == {"20"}
    assert rows[0]["p50 ratio"] == rows[3]["p50 ratio"] == "baseline"
    assert all(rows[i]["p50 ratio"].endswith("x") for i in (1, 2, 4, 5))


def test_outbox_bench_quick() -> None:
    require_servers("RabbitMQ", "PostgreSQL")
    rows = run_quick("outbox_bench")
    assert [(row["target"], row["contender"]) for row in rows] == [
        (target, contender)
        for target in ("amqp", "memory (ref)")
        for contender in (
            "publish_many (ceiling)",
            "relay from sqlite",
            "relay from postgresql",
        )
    ]
    assert_all_ok(rows)
    assert {row["events"] for row in rows} == {"200"}
    assert [row["ratio"] for row in rows if row["contender"].startswith("publish")] == [
        "baseline",
        "baseline",
    ]
    assert all(row["ratio"].endswith("x") for row in rows if row["contender"].startswith("relay"))


def test_hrweb_bench_quick() -> None:
    require_servers("RabbitMQ")
    rows = run_quick("hrweb_bench")
    assert [(row["broker"], row["scenario"]) for row in rows] == [
        (broker, scenario)
        for broker in ("sqlite", "amqp")
        for scenario in ("payroll running (baseline)", "payroll down")
    ]
    assert_all_ok(rows)
    assert {"p50 ms", "p95 ms", "p99 ms", "creates/s"} <= set(rows[0])
    assert {row["creates"] for row in rows} == {"16"}
    assert {row["failed"] for row in rows} == {"0"}
    assert rows[1]["ratio"].endswith("x") and rows[3]["ratio"].endswith("x")
