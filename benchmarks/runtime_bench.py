"""The runtime's own cost on ``memory://``: events/s through a service, A against B.

``python -m benchmarks.runtime_bench [--events N] [--rounds R] [--middleware K]
[--against SRC]`` publishes N events in batches of 500 to ``memory://`` and handles
them in one service (concurrency 16), in a fresh process per round. With
``--against SRC`` (another checkout's ``src`` directory, e.g. a ``git worktree`` of an
older commit) rounds alternate between this tree and that one, A B A B ..., and the
medians and their ratio are printed, with the median CPU time per event (the steadier
figure when other work shares the machine): the way to show what a change costs on a
shared, noisy machine. ``--middleware K`` puts K pass-through middlewares on the bus (this
tree only): the price of the pipeline itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import herald

__all__ = ["main", "one_round"]

ROOT = Path(__file__).resolve().parents[1]


class Tick(herald.Event, type="bench.tick"):
    n: int


def pass_through() -> Any:
    """A middleware that only calls on (built on demand: older trees have none)."""

    class PassThrough(herald.Middleware):
        async def handle(self, ctx: herald.Context, call_next: herald.Next) -> herald.Outcome:
            return await call_next(ctx)

    return PassThrough()


async def one_round(events: int, middleware: int) -> tuple[float, float]:
    """Events/s and CPU microseconds per event of one run in this process."""
    stack = [pass_through() for _ in range(middleware)]
    service = herald.Service("bench", concurrency=16)
    done = asyncio.Event()
    handled = 0

    @service.on(Tick)
    async def handle(event: Tick, ctx: herald.Context) -> None:
        nonlocal handled
        handled += 1
        if handled == events:
            done.set()

    options: dict[str, Any] = {"middleware": stack} if stack else {}
    async with herald.connect(f"memory://runtime-bench-{os.getpid()}", **options) as bus:
        worker = await bus.start(service)
        started, cpu = time.perf_counter(), time.process_time()
        for first in range(0, events, 500):
            await bus.publish_many(Tick(n=n) for n in range(first, min(first + 500, events)))
        await done.wait()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        await worker.stop()
    return events / elapsed, cpu / events * 1e6


def _run_in_child(src: Path, events: int, middleware: int) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.runtime_bench", "--child", str(events), str(middleware)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    rate, cpu = done.stdout.split()[-2:]
    return float(rate), float(cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runtime_bench")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--middleware", type=int, default=0)
    parser.add_argument("--against", type=Path, help="another checkout's src directory")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("{:.0f} {:.2f}".format(*asyncio.run(one_round(*args.child))))
        return
    contenders = {"this tree": ROOT / "src"}
    if args.against:
        contenders[f"against {args.against}"] = args.against.resolve()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, src in contenders.items():
            middleware = args.middleware if name == "this tree" else 0
            runs[name].append(_run_in_child(src, args.events, middleware))
    for name, values in runs.items():
        rate = statistics.median(r for r, _ in values)
        cpu = statistics.median(c for _, c in values)
        shown = " ".join(f"{r:,.0f}" for r, _ in values)
        print(f"{name:<40} median {rate:>9,.0f} ev/s {cpu:6.1f} us CPU/event   ({shown})")
    if args.against:
        a, b = (statistics.median(r for r, _ in v) for v in runs.values())
        ca, cb = (statistics.median(c for _, c in v) for v in runs.values())
        print(
            f"ratio this tree / against: {a / b:.2f}x throughput, {ca / cb:.2f}x CPU per event "
            f"({args.rounds} interleaved rounds)"
        )


if __name__ == "__main__":
    main()
