"""``python -m benchmarks [memory|sqlite|amqp|nats|redis|sqs|kafka|all] [--events N] [--quick]``.

Prints one table per suite as it finishes, then the whole run's table, and writes
``var/bench/results.json``. ``all`` (the default) runs sqlite, amqp, nats and redis.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .report import LEGEND, render, write_json
from .suite import ALL, QUICK, SUITES, Options, run_suites

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "suites", nargs="*", metavar="SUITE", help=f"{', '.join(SUITES)} or all (default)"
    )
    parser.add_argument("--events", type=int, help="events in the throughput run (50000)")
    parser.add_argument("--quick", action="store_true", help="tiny runs, to check it works")
    parser.add_argument("--duration", type=float, help="seconds of steady publishing (10)")
    parser.add_argument("--rate", type=float, help="steady publish rate, events/s (1000)")
    parser.add_argument("--window", type=int, help="events in flight per throughput batch")
    parser.add_argument("--timeout", type=float, help="seconds a run may overrun (60)")
    parser.add_argument("--repeat", type=int, help="rounds (contenders interleaved), median kept")
    parser.add_argument("--only", default="", help="comma-separated contender names to run")
    parser.add_argument("--output", type=Path, default=Path("var/bench/results.json"))
    return parser


def _options(args: argparse.Namespace) -> Options:
    base = QUICK if args.quick else Options()
    return Options(
        events=args.events or base.events,
        window=args.window or base.window,
        rate=args.rate or base.rate,
        duration=args.duration or base.duration,
        timeout=args.timeout or base.timeout,
        repeat=args.repeat or base.repeat,
        only=tuple(name for name in args.only.split(",") if name),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    unknown = [s for s in args.suites if s not in SUITES and s != "all"]
    if unknown:
        _parser().error(f"unknown suite {unknown[0]!r}; choose from {', '.join(SUITES)}, all")
    names = list(
        dict.fromkeys(n for s in args.suites or ["all"] for n in (ALL if s == "all" else (s,)))
    )
    options = _options(args)
    load_before = os.getloadavg()
    rows = run_suites(names, options)
    if len(names) > 1:
        print(f"\nall suites\n{render(rows)}", flush=True)
    print(f"\n{LEGEND}", flush=True)
    load_after = os.getloadavg()
    print(
        f"\nhost: {os.cpu_count()} CPUs, load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after (other work on the host skews the figures)",
        flush=True,
    )
    settings = {
        "suites": names,
        "events": options.events,
        "window": options.window,
        "rate": options.rate,
        "duration": options.duration,
        "repeat": options.repeat,
        "quick": args.quick,
        "only": list(options.only),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    write_json(args.output, rows, settings)
    print(f"\nresults written to {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
