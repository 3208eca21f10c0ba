"""``python -m benchmarks.costmodel``: the suites, the sweeps and memory, into one page.

Runs the suites of ``python -m benchmarks`` (tables of Herald against the raw
clients), then the sweeps of :mod:`benchmarks.sweep` on every broker asked for
(payload size, consumer processes, services and queues), then the memory figures of
:mod:`benchmarks.footprint`, and writes ``docs/performance.md`` with its plots under
``docs/performance/`` and the raw figures in ``var/bench/costmodel.json``.

Every size is an option; the defaults (``make bench``) take about a quarter of an hour
on a busy 2-core machine. ``--quick`` is a smoke run (memory suite, memory:// and
SQLite sweeps of two sizes each, small memory figures) in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from .brokers import BROKERS
from .footprint import BacklogResult, IdleResult, measure_backlog, measure_idle
from .suite import ALL, QUICK, SUITES, Options, run_suites
from .sweep import Point, PointResult, run_point

__all__ = ["Config", "main"]

MiB = 1 << 20
SUITE_OPTIONS = Options(events=10_000, duration=3.0)


@dataclass(frozen=True, slots=True)
class Config:
    """The sizes of one cost-model run (the defaults are ``make bench``'s)."""

    suites: tuple[str, ...] = ALL
    suite_options: Options = SUITE_OPTIONS
    brokers: tuple[str, ...] = BROKERS
    payloads: tuple[int, ...] = (200, 10 * 1024, MiB)
    consumers: tuple[int, ...] = (1, 2, 4)
    services: tuple[int, ...] = (1, 10, 100)
    events: int = 1000
    """Events per sweep point of 200-byte bodies; larger bodies get fewer (same bytes
    up to :attr:`max_bytes`), never under :attr:`min_events`."""
    max_bytes: int = 32 * MiB
    min_events: int = 30
    slow_brokers: tuple[str, ...] = ("sqs",)
    """Brokers whose points carry a quarter of the events (moto does ~hundreds/s)."""
    point_timeout: float = 90.0
    idle_brokers: tuple[str, ...] = ("sqlite", "amqp")
    idle_warmup: int = 200
    idle_settle: float = 3.0
    backlog_brokers: tuple[str, ...] = ("sqlite", "amqp")
    backlog: int = 300
    backlog_body: int = MiB
    bounds: tuple[int, ...] = (8 * MiB, 64 * MiB)
    handler_seconds: float = 0.05


QUICK_CONFIG = Config(
    suites=("memory",),
    suite_options=QUICK,
    brokers=("memory", "sqlite"),
    payloads=(200, 10 * 1024),
    consumers=(1, 2),
    services=(1, 3),
    events=200,
    point_timeout=30.0,
    idle_brokers=("sqlite",),
    idle_warmup=10,
    idle_settle=0.2,
    backlog_brokers=("sqlite",),
    backlog=12,
    bounds=(4 * MiB,),
    handler_seconds=0.01,
)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def _names(text: str, known: Sequence[str]) -> tuple[str, ...]:
    names = tuple(part for part in text.split(",") if part)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {unknown[0]!r}; choose from {', '.join(known)}")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.costmodel", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds")
    parser.add_argument("--suites", help=f"comma-separated from {', '.join(SUITES)}; '' for none")
    parser.add_argument("--suite-events", type=int, help="events per suite throughput run")
    parser.add_argument("--brokers", help=f"sweep brokers, from {', '.join(BROKERS)}")
    parser.add_argument("--payloads", help="body sizes in bytes (200,10240,1048576)")
    parser.add_argument("--consumers", help="consumer processes (1,2,4)")
    parser.add_argument("--services", help="services, one queue each (1,10,100)")
    parser.add_argument("--events", type=int, help="events per 200-byte sweep point (2000)")
    parser.add_argument("--memory-brokers", help="brokers of the memory figures (sqlite,amqp)")
    parser.add_argument("--backlog", type=int, help="bodies in the backlog (300)")
    parser.add_argument("--bounds", help="prefetch_bytes values in MiB (8,64)")
    parser.add_argument("--output", type=Path, default=Path("docs/performance.md"))
    parser.add_argument("--json", type=Path, default=Path("var/bench/costmodel.json"))
    parser.add_argument(
        "--quiet-host", action="store_true", help="do not say the host was shared with other work"
    )
    parser.add_argument(
        "--from-json", type=Path, metavar="JSON", help="measure nothing: render a run's JSON again"
    )
    return parser


def _config(args: argparse.Namespace) -> Config:
    config = QUICK_CONFIG if args.quick else Config()
    changes: dict[str, object] = {}
    if args.suites is not None:
        changes["suites"] = _names(args.suites, tuple(SUITES))
    if args.suite_events:
        changes["suite_options"] = replace(config.suite_options, events=args.suite_events)
    if args.brokers is not None:
        changes["brokers"] = _names(args.brokers, BROKERS)
    for name in ("payloads", "consumers", "services"):
        if getattr(args, name):
            changes[name] = _ints(getattr(args, name))
    if args.events:
        changes["events"] = args.events
    if args.memory_brokers is not None:
        brokers = _names(args.memory_brokers, BROKERS)
        changes["idle_brokers"] = changes["backlog_brokers"] = brokers
    if args.backlog:
        changes["backlog"] = args.backlog
    if args.bounds:
        changes["bounds"] = tuple(value * MiB for value in _ints(args.bounds))
    return replace(config, **changes)  # type: ignore[arg-type]


def points(config: Config) -> list[Point]:
    """The sweep: each dimension varied from the first value of the others."""
    base_payload, base_consumers, base_services = (
        config.payloads[0],
        config.consumers[0],
        config.services[0],
    )
    plan: list[Point] = []
    for broker in config.brokers:
        scale = 4 if broker in config.slow_brokers else 1

        def point(dimension: str, payload: int, consumers: int, services: int) -> Point:
            by_bytes = config.max_bytes // max(payload, 1)
            events = max(config.min_events, min(config.events, by_bytes)) // scale  # noqa: B023
            return Point(broker, dimension, payload, consumers, services, max(events, 1),  # noqa: B023
                         timeout=config.point_timeout)  # fmt: skip

        plan += [point("payload", p, base_consumers, base_services) for p in config.payloads]
        plan += [point("consumers", base_payload, c, base_services) for c in config.consumers]
        plan += [point("services", base_payload, base_consumers, s) for s in config.services]
    return plan


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _sweep(config: Config, run_id: str) -> list[PointResult]:
    results: list[PointResult] = []
    measured: dict[tuple[str, int, int, int], PointResult] = {}
    for point in points(config):
        key = (point.broker, point.payload, point.consumers, point.services)
        if key in measured:  # the base point is in every dimension: measured once
            results.append(replace(measured[key], point=point))
            continue
        _log(f"[sweep] {point.broker} {point.dimension}={point.value} ({point.events:,} events)")
        result = run_point(point, f"{run_id}{len(measured)}")
        _log(f"  {result.status}: {result.events_per_s or 0:,.0f} ev/s")
        measured[key] = result
        results.append(result)
    return results


def _memory(config: Config, run_id: str) -> tuple[list[IdleResult], list[BacklogResult]]:
    idle = []
    for broker in config.idle_brokers:
        _log(f"[memory] idle service on {broker}")
        idle.append(measure_idle(broker, run_id, config.idle_warmup, config.idle_settle))
    backlog = []
    for broker in config.backlog_brokers:
        for bound in config.bounds:
            _log(f"[memory] {config.backlog} x {config.backlog_body:,} B on {broker}, {bound:,}")
            backlog.append(
                measure_backlog(
                    broker,
                    run_id,
                    config.backlog,
                    config.backlog_body,
                    bound,
                    config.handler_seconds,
                )
            )
    return idle, backlog


def main(argv: Sequence[str] | None = None) -> int:
    # matplotlib is imported here, not at the top: spawned consumers re-import this
    # module, and their memory is measured.
    from .page import Page, load_page, render_page  # noqa: PLC0415

    args = _parser().parse_args(argv)
    output: Path = args.output
    plots = output.parent / output.stem
    if args.from_json:
        page = load_page(json.loads(args.from_json.read_text()))
        output.write_text(render_page(page, plots, output.parent))
        print(f"wrote {output} and {plots}/*.png from {args.from_json}", flush=True)
        return 0
    config = _config(args)
    run_id = f"{time.strftime('%H%M%S')}{os.getpid()}"
    load_before = os.getloadavg()
    started = time.monotonic()
    suite_rows = run_suites(config.suites, config.suite_options) if config.suites else []
    sweep = _sweep(config, run_id)
    idle, backlog = _memory(config, run_id)
    load_after = os.getloadavg()
    command = "python -m benchmarks.costmodel" + "".join(
        f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv)
    )
    settings: dict[str, object] = {
        "suite events": config.suite_options.events,
        "sweep events (200 B)": config.events,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    page = Page(
        command=command,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpus=os.cpu_count() or 0,
        load_before=load_before,
        load_after=load_after,
        suite_rows=suite_rows,
        sweep=sweep,
        idle=idle,
        backlog=backlog,
        settings=settings,
        shared_host=not args.quiet_host,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_page(page, plots, output.parent))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(asdict(page), indent=2, default=str) + "\n")
    print(f"wrote {output} and {plots}/*.png in {settings['minutes']} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
