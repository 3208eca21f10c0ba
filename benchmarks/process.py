"""Running one measurement: consumer and publisher in two spawned processes.

The consumer process subscribes first and reports ready; only then is the publisher
process started. The publisher connects (untimed), then either publishes windows of
``plan.window`` events back to back (throughput) or one event per publish call on a
fixed schedule of ``plan.rate`` per second, each call in its own task so a slow
confirm never delays the schedule (latency). Throughput is measured from the
publisher's first publish call to the consumer's last handled event.

With ``BENCH_PROFILE=<dir>`` set, each child process runs under cProfile and dumps
``<dir>/<contender>-<workload>-<publisher|consumer>.prof``.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import inspect
import multiprocessing
import os
import sys
import time
import traceback
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from .harness import THROUGHPUT, Contender, Plan, Recorder, percentile

__all__ = ["MeasurementError", "measure"]

READY_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 10.0
Result = dict[str, Any]


class MeasurementError(Exception):
    """A side of the measurement failed; the message says which and why."""


def measure(cls: type[Contender], run_id: str, plan: Plan) -> Result:
    """Run ``plan`` for contender ``cls``; returns the combined figures."""
    if cls.inline:
        return asyncio.run(_measure_inline(cls, run_id, plan))
    return _measure_processes(cls, run_id, plan)


def _combine(plan: Plan, published: Result, consumed: Result) -> Result:
    seconds = max((consumed["last_ns"] - published["first_ns"]) / 1e9, 1e-9)
    count = int(consumed["count"])
    return {
        "events": plan.events,
        "handled": count,
        "seconds": seconds,
        "events_per_s": count / seconds,
        "publish_seconds": (published["end_ns"] - published["first_ns"]) / 1e9,
        "p50_ms": consumed["p50_ms"],
        "p99_ms": consumed["p99_ms"],
        "max_ms": consumed["max_ms"],
        "duplicates": consumed["duplicates"],
        "publisher_cpu_us_per_event": 1e6 * published["cpu_s"] / max(count, 1),
        "consumer_cpu_us_per_event": 1e6 * consumed["cpu_s"] / max(count, 1),
        "publish_confirm_p50_ms": published.get("confirm_p50_ms"),
        "publish_confirm_p99_ms": published.get("confirm_p99_ms"),
        "error": consumed.get("error"),
        "note": consumed.get("note"),
    }


async def drive_publisher(contender: Contender, plan: Plan) -> Result:
    """Publish the plan's events; returns when the first and last were sent."""
    async with contender.publisher() as publisher:
        first_ns, cpu = time.time_ns(), time.process_time()
        if plan.workload == THROUGHPUT:
            for start in range(0, plan.events, plan.window):
                stamp = time.time_ns()
                stop = min(start + plan.window, plan.events)
                await publisher.publish([(seq, stamp) for seq in range(start, stop)])
        else:
            tasks: set[asyncio.Task[None]] = set()
            failures: list[BaseException] = []
            confirms: list[int] = []

            async def timed(seq: int) -> None:
                started = time.time_ns()
                await publisher.publish(((seq, started),))
                confirms.append(time.time_ns() - started)

            def settled(task: asyncio.Task[None]) -> None:
                tasks.discard(task)
                if not task.cancelled() and task.exception() is not None:
                    failures.append(task.exception())  # type: ignore[arg-type]

            origin = time.perf_counter()
            for seq in range(plan.events):
                delay = origin + seq / plan.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if failures:
                    raise failures[0]
                task = asyncio.create_task(timed(seq))
                tasks.add(task)
                task.add_done_callback(settled)
            while tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if failures:
                raise failures[0]
            confirms.sort()
            return {
                "first_ns": first_ns,
                "end_ns": time.time_ns(),
                "cpu_s": time.process_time() - cpu,
                "confirm_p50_ms": percentile(confirms, 0.50) / 1e6,
                "confirm_p99_ms": percentile(confirms, 0.99) / 1e6,
            }
        return {"first_ns": first_ns, "end_ns": time.time_ns(), "cpu_s": time.process_time() - cpu}


async def run_consumer(contender: Contender, recorder: Recorder, plan: Plan, ready: Any) -> Result:
    """Consume until every event was handled, then give the contender
    ``SHUTDOWN_TIMEOUT`` seconds to unsubscribe and close. Its CPU time counts from
    ``ready()`` to the last event handled."""
    cpu = [0.0, 0.0]

    def started() -> None:
        cpu[0] = time.process_time()
        ready()

    consuming = asyncio.create_task(contender.consume(recorder, started))
    finished = asyncio.create_task(recorder.done.wait())
    await asyncio.wait({consuming, finished}, timeout=plan.timeout, return_when="FIRST_COMPLETED")
    cpu[1] = time.process_time()
    if recorder.done.is_set() and not consuming.done():
        await asyncio.wait({consuming}, timeout=SHUTDOWN_TIMEOUT)
        if not consuming.done():
            _dump_tasks(f"{type(contender).__name__}: consumer still shutting down")
    finished.cancel()
    error = note = None
    if consuming.done():
        consuming.result()
    else:
        consuming.cancel()
        await asyncio.wait({consuming}, timeout=SHUTDOWN_TIMEOUT)
        if recorder.done.is_set():
            note = f"consumer shutdown took over {SHUTDOWN_TIMEOUT:.0f}s"
        else:
            error = f"timed out after {plan.timeout:.0f}s: {recorder.count}/{plan.events} handled"
    return {**recorder.summary(), "cpu_s": cpu[1] - cpu[0], "error": error, "note": note}


def _awaiting(task: asyncio.Task[Any]) -> str:
    """The chain of coroutines a task is suspended in, outermost first."""
    parts = []
    step: Any = task.get_coro()
    while step is not None:
        frame = getattr(step, "cr_frame", None) or getattr(step, "ag_frame", None)
        frame = frame or getattr(step, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            parts.append(f"{code.co_name} ({Path(code.co_filename).name}:{frame.f_lineno})")
        inner = getattr(step, "cr_await", None) or getattr(step, "ag_await", None)
        if inner is None and type(step).__name__ == "async_generator_asend":
            # ``async for`` awaits an asend object; the generator is among its referents.
            generators = [r for r in gc.get_referents(step) if inspect.isasyncgen(r)]
            inner = generators[0] if generators else None
        step = inner
    return " -> ".join(parts) or "not started"


def _dump_tasks(title: str) -> None:
    """Print where every task of the loop is waiting (to find a hung shutdown)."""
    lines = [f"{title}; pending tasks:"]
    lines += [f"  {task.get_name()}: {_awaiting(task)}" for task in asyncio.all_tasks()]
    print("\n".join(lines), file=sys.stderr, flush=True)


async def _measure_inline(cls: type[Contender], run_id: str, plan: Plan) -> Result:
    contender = cls(run_id)
    recorder = Recorder(plan)
    ready = asyncio.Event()
    consumer = asyncio.create_task(run_consumer(contender, recorder, plan, ready.set))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({consumer, waiter}, timeout=READY_TIMEOUT, return_when="FIRST_COMPLETED")
    if not ready.is_set():
        waiter.cancel()
        if consumer.done():
            consumer.result()
        consumer.cancel()
        raise MeasurementError("consumer never became ready")
    published = await drive_publisher(contender, plan)
    return _combine(plan, published, await consumer)


def _consumer_main(cls: type[Contender], run_id: str, plan: Plan, conn: Connection) -> None:
    async def main() -> Result:
        recorder = Recorder(plan)
        return await run_consumer(cls(run_id), recorder, plan, lambda: conn.send(("ready", None)))

    _child(main, conn, f"{cls.name}-{plan.workload}-consumer")


def _publisher_main(cls: type[Contender], run_id: str, plan: Plan, conn: Connection) -> None:
    async def main() -> Result:
        return await drive_publisher(cls(run_id), plan)

    _child(main, conn, f"{cls.name}-{plan.workload}-publisher")


def _run(main: Any, label: str) -> Result:
    """Run ``main()``; under cProfile into ``$BENCH_PROFILE/<label>.prof`` if set."""
    directory = os.environ.get("BENCH_PROFILE")
    if not directory:
        result: Result = asyncio.run(main())
        return result
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(asyncio.run, main())
    finally:
        Path(directory).mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(Path(directory) / f"{label}.prof")


def _child(main: Any, conn: Connection, label: str) -> None:
    try:
        conn.send(("result", _run(main, label)))
    except BaseException as exc:
        detail = "".join(traceback.format_exception_only(exc)).strip()
        conn.send(("error", detail))
        if not isinstance(exc, Exception):
            raise
    finally:
        conn.close()


def _receive(conn: Connection, process: BaseProcess, timeout: float, side: str) -> Any:
    deadline = time.monotonic() + timeout
    while not conn.poll(0.2):
        if not process.is_alive() and not conn.poll(0.2):
            raise MeasurementError(f"{side} exited with code {process.exitcode}")
        if time.monotonic() > deadline:
            raise MeasurementError(f"{side} sent nothing within {timeout:.0f}s")
    kind, payload = conn.recv()
    if kind == "error":
        raise MeasurementError(f"{side}: {payload}")
    return payload


def _measure_processes(cls: type[Contender], run_id: str, plan: Plan) -> Result:
    ctx = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = []
    finished = False
    try:
        from_consumer, to_parent = ctx.Pipe(duplex=False)
        consumer = ctx.Process(
            target=_consumer_main, args=(cls, run_id, plan, to_parent), name="bench-consumer"
        )
        consumer.start()
        processes.append(consumer)
        to_parent.close()
        _receive(from_consumer, consumer, READY_TIMEOUT, "consumer")
        from_publisher, to_parent = ctx.Pipe(duplex=False)
        publisher = ctx.Process(
            target=_publisher_main, args=(cls, run_id, plan, to_parent), name="bench-publisher"
        )
        publisher.start()
        processes.append(publisher)
        to_parent.close()
        published = _receive(from_publisher, publisher, plan.timeout + READY_TIMEOUT, "publisher")
        consumed = _receive(from_consumer, consumer, plan.timeout + READY_TIMEOUT, "consumer")
        finished = True
        return _combine(plan, published, consumed)
    finally:
        for process in processes:
            process.join(10 if finished else 0.5)
            if process.is_alive():
                process.terminate()
                process.join(5)
