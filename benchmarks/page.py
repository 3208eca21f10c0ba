"""``docs/performance.md`` and its plots, from one cost-model run's results.

The page has the suite tables (as ``python -m benchmarks`` prints them), one section
per sweep dimension (a table of events/s per broker, and a PNG with one line per
broker), the memory figures, the host's CPU count and load, and the command that
reproduces it all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .footprint import BacklogResult, IdleResult
from .report import LEGEND, Row, render
from .sweep import Point, PointResult

__all__ = ["DIMENSIONS", "Page", "load_page", "plot", "render_page", "size_label"]

MiB = 1 << 20
DIMENSIONS = {
    "payload": ("payload size", "bytes of body per event"),
    "consumers": ("consumer processes", "consumer processes on each queue"),
    "services": ("services and queues", "services, one queue each, in one process"),
}


def size_label(size: int) -> str:
    """``200 B``, ``10 KiB``, ``1 MiB``."""
    for unit, scale in (("MiB", MiB), ("KiB", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MiB:,.1f}"


@dataclass(slots=True)
class Page:
    """Everything one run measured, and how it was run."""

    command: str
    generated_at: str
    cpus: int
    load_before: Sequence[float]
    load_after: Sequence[float]
    suite_rows: list[Row]
    sweep: list[PointResult]
    idle: list[IdleResult]
    backlog: list[BacklogResult]
    settings: dict[str, object]
    shared_host: bool = True


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` with its whitespace collapsed, cut at ``limit`` characters."""
    text = " ".join(text.replace("\\n", " ").split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _value_label(dimension: str, value: int) -> str:
    return size_label(value) if dimension == "payload" else str(value)


def plot(results: Sequence[PointResult], dimension: str, path: Path) -> None:
    """One line per broker: events/s against ``dimension`` (log-log)."""
    title, axis = DIMENSIONS[dimension]
    figure, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    values = sorted({r.point.value for r in results if r.point.dimension == dimension})
    for broker in dict.fromkeys(r.point.broker for r in results):
        points = sorted(
            (r.point.value, r.events_per_s)
            for r in results
            if r.point.dimension == dimension and r.point.broker == broker and r.events_per_s
        )
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=broker)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(values, [_value_label(dimension, v) for v in values])
    ax.minorticks_off()
    ax.set_xlabel(axis)
    ax.set_ylabel("events handled / s")
    ax.set_title(f"Herald throughput against {title}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def _sweep_table(results: Sequence[PointResult], dimension: str) -> list[str]:
    rows = [r for r in results if r.point.dimension == dimension]
    values = sorted({r.point.value for r in rows})
    head = [_value_label(dimension, v) for v in values]
    lines = [
        "| broker | " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(head),
    ]
    notes: list[str] = []
    for broker in dict.fromkeys(r.point.broker for r in rows):
        cells = []
        for value in values:
            found = [r for r in rows if r.point.broker == broker and r.point.value == value]
            if not found:
                cells.append("-")
                continue
            r = found[0]
            if r.events_per_s is None:
                notes.append(f"{broker}, {_value_label(dimension, value)}: {_one_line(r.status)}")
                cells.append(f"{r.status.split(':')[0]} [{len(notes)}]")
                continue
            cell = f"{r.events_per_s:,.0f} ev/s"
            if dimension == "payload":
                cell += f" ({r.mib_per_s:,.1f} MiB/s)"
            if dimension == "services" and r.start_seconds is not None:
                cell += f", start {r.start_seconds:.2f} s"
            if r.warnings:
                notes.append(
                    f"{broker}, {_value_label(dimension, value)}: {r.warnings} "
                    f"warnings logged by the consumers, the first: {_one_line(r.first_warning)}"
                )
                cell += f" [{len(notes)}]"
            cells.append(cell)
        lines.append(f"| {broker} | " + " | ".join(cells) + " |")
    lines += [""] + [f"[{n}] {text}  " for n, text in enumerate(notes, 1)]
    return lines


def _events_line(results: Sequence[PointResult], dimension: str) -> str:
    counts = sorted(
        {
            (r.point.broker, r.point.value, r.point.events)
            for r in results
            if r.point.dimension == dimension
        }
    )
    by_value: dict[str, set[int]] = {}
    for _, value, events in counts:
        by_value.setdefault(_value_label(dimension, value), set()).add(events)
    parts = [f"{k}: {'/'.join(f'{e:,}' for e in sorted(v))}" for k, v in by_value.items()]
    return "Events per point: " + "; ".join(parts) + "."


_DIMENSION_TEXT = {
    "payload": "One consumer process, one service, events of each body size.",
    "consumers": "200-byte events, one service; N consumer processes compete on its queue "
    "(each runs the service with concurrency 16).",
    "services": "200-byte events spread round-robin over N event types, one service (one "
    "queue) per type, all in one consumer process; *start* is how long subscribing "
    "every queue took.",
}


def _idle_lines(idle: Sequence[IdleResult]) -> list[str]:
    lines = [
        "### An idle service",
        "",
        "`herald run benchmarks.idle_app:service` (one service, two handlers) as its own",
        "process; after it handled the warm-up events it idles a few seconds and its `VmRSS`",
        "is read.",
        "",
        "| broker | warm-up events | idle RSS (MiB) | status |",
        "|---|---:|---:|---|",
    ]
    for r in idle:
        lines.append(f"| {r.broker} | {r.warmup:,} | {_mib(r.rss)} | {_one_line(r.status)} |")
    return [*lines, ""]


def _backlog_lines(backlog: Sequence[BacklogResult]) -> list[str]:
    lines = [
        "### A consumer behind a backlog of large bodies",
        "",
        "The runtime's promise (`herald.Prefetch`, `herald.window.Window`): a consumer holds",
        "unsettled at most `Prefetch.messages` deliveries, and hands one out only while the",
        "bodies it holds are under `Prefetch.bytes` (`Service(prefetch_bytes=...)`), always",
        "at least one: **bodies in flight <= `prefetch_bytes` + one body**, whatever the",
        "backlog. The backlog below is published before the consumer starts; the handler",
        "sleeps (a slow handler, 16 at once). *RSS growth* is the peak (`VmHWM`) minus the",
        "RSS once connected; the process also holds each body decoded (JSON and the event",
        "model), so its growth is a small multiple of the bodies in flight, not of the backlog.",
        "*Handlers at once* is how many handler calls overlapped (at most the service's",
        "concurrency, 16, and never more than the window hands out).",
        "On SQLite a claim reads up to `Prefetch.messages` rows with their bodies and only",
        "then gives back those past the byte budget (`Store.claim` in",
        "`herald/brokers/sqlite/store.py`), so it holds up to `Prefetch.messages` bodies (64",
        "by default) for a moment, whatever `prefetch_bytes` says: its peak follows the",
        "message bound, not the byte bound.",
        "",
        "| broker | backlog | prefetch_bytes | promised bodies in flight (MiB) "
        "| handlers at once (max) | RSS connected (MiB) | peak RSS (MiB) | RSS growth (MiB) "
        "| growth / promise | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for b in backlog:
        growth = (
            None if b.peak_rss is None or b.baseline_rss is None else b.peak_rss - b.baseline_rss
        )
        ratio = "-" if growth is None else f"{growth / b.promised:.2f}"
        held = "-" if b.held_max is None else f"{b.held_max} x {size_label(b.body)}"
        lines.append(
            f"| {b.broker} | {b.backlog:,} x {size_label(b.body)} | {size_label(b.bound)} "
            f"| {_mib(b.promised)} | {held} | {_mib(b.baseline_rss)} | {_mib(b.peak_rss)} "
            f"| {_mib(growth)} | {ratio} | {_one_line(b.status)} |"
        )
    return [*lines, ""]


def _memory_section(page: Page) -> list[str]:
    if not page.idle and not page.backlog:
        return []
    lines = [
        "## Memory",
        "",
        "Reproduce these alone with `python -m benchmarks.costmodel --suites '' --brokers ''"
        " --memory-brokers sqlite,amqp --backlog 300 --bounds 8,64 --output <page>`.",
        "",
    ]
    if page.idle:
        lines += _idle_lines(page.idle)
    if page.backlog:
        lines += _backlog_lines(page.backlog)
    return lines


def render_page(page: Page, plots: Path, docs: Path) -> str:
    """The Markdown of the page; writes the plots under ``plots`` (linked from ``docs``)."""
    lines = [
        "# Performance: the figures and the cost model",
        "",
        f"Generated by `{page.command}` at {page.generated_at}; reproduce with the same",
        "command (`make bench` runs it with the defaults).",
        "",
        "## The host",
        "",
        f"- {page.cpus} CPUs; load average (1 min) {page.load_before[0]:.2f} before the run, "
        f"{page.load_after[0]:.2f} after (5 min: {page.load_before[1]:.2f} / "
        f"{page.load_after[1]:.2f}).",
    ]
    if page.shared_host:
        lines.append(
            "- The machine was shared with other work during the run (other builds and test "
            "runs): absolute figures are lower and noisier than on a quiet host; the ratios "
            "in the suite tables are measured in the same run and hold better."
        )
    lines += [
        "- Settings: " + ", ".join(f"{k}={v}" for k, v in page.settings.items()) + ".",
        "",
        "## Against the raw clients",
        "",
        "Each suite as `python -m benchmarks` prints it: publisher and consumer in two",
        "processes; ratios against the suite's baseline measured in the same run. The Kafka",
        "and SQS suites (`--suites sqlite,amqp,nats,redis,kafka,sqs`) start their own servers",
        "(Tansu, moto) on loopback ports; they are left out of the default run for time.",
        "",
        "```",
        render(page.suite_rows) if page.suite_rows else "(suites not run)",
        "",
        LEGEND,
        "```",
        "",
        "## How cost grows with the work",
        "",
        "Herald alone, one dimension varied at a time from 200-byte events, one consumer",
        "process and one service. Publisher and consumers are separate processes (memory://:",
        "one process); throughput is from the first publish to the last event handled.",
        "Publisher, consumers and the broker share the host's CPUs: where the consumer",
        "processes outnumber the free cores, adding one can lower the figure.",
        "The Kafka and SQS points run on Tansu and moto started by the benchmarks, not on a",
        "Kafka cluster or AWS: they compare Herald across its own work, not those services.",
    ]
    for dimension, (title, _) in DIMENSIONS.items():
        if not any(r.point.dimension == dimension for r in page.sweep):
            continue
        image = plots / f"{dimension}.png"
        plot(page.sweep, dimension, image)
        lines += [
            "",
            f"### Throughput against {title}",
            "",
            _DIMENSION_TEXT[dimension] + " " + _events_line(page.sweep, dimension),
            "",
            *_sweep_table(page.sweep, dimension),
            f"![Throughput against {title}]({image.relative_to(docs).as_posix()})",
        ]
    lines += ["", *_memory_section(page)]
    return "\n".join(lines)


def load_page(document: dict[str, Any]) -> Page:
    """A :class:`Page` from the JSON a run wrote (``var/bench/costmodel.json``)."""
    sweep = []
    for item in document["sweep"]:
        rest = {k: v for k, v in item.items() if k != "point"}
        sweep.append(PointResult(point=Point(**item["point"]), **rest))
    return Page(
        **{
            **document,
            "suite_rows": [Row(**row) for row in document["suite_rows"]],
            "sweep": sweep,
            "idle": [IdleResult(**item) for item in document["idle"]],
            "backlog": [BacklogResult(**item) for item in document["backlog"]],
        }
    )
