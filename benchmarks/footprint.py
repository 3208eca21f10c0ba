"""Memory: an idle service's RSS, and a consumer's peak RSS behind a backlog of big bodies.

* **Idle**: ``herald --broker URL run benchmarks.idle_app:service`` as its own process;
  once it serves, ``warmup`` events are published and handled, then it sits idle for
  ``settle`` seconds and its resident set (``VmRSS`` of ``/proc/<pid>/status``) is read.
* **Backlog**: ``backlog`` events with ``body`` bytes of body are published before any
  consumer exists; then one consumer process starts a service with
  ``prefetch_bytes=bound`` and a slow handler (``handler_seconds`` each, 16 at once).
  The runtime promises that the bodies one consumer holds unsettled stay under
  ``Prefetch.bytes`` plus one body (a body is handed out while the bytes held are under
  the bound, and always at least one: :class:`herald.window.Window`). The process
  reports its RSS once connected (before subscribing), its peak (``VmHWM``) after the
  whole backlog was handled, and the most bodies it held at once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import herald

from .brokers import broker_url, cleanup_url, consumer_context

__all__ = ["BacklogResult", "IdleResult", "measure_backlog", "measure_idle", "rss"]

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]


def rss(pid: int | str = "self", field_name: str = "VmRSS") -> int:
    """A process's ``VmRSS`` (or another ``/proc/<pid>/status`` field) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"{field_name} not in /proc/{pid}/status")


@dataclass(slots=True)
class IdleResult:
    broker: str
    status: str = "ok"
    rss: int | None = None
    warmup: int = 0


@dataclass(slots=True)
class BacklogResult:
    broker: str
    backlog: int
    body: int
    bound: int
    status: str = "ok"
    baseline_rss: int | None = None
    peak_rss: int | None = None
    held_max: int | None = None
    seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def promised(self) -> int:
        """Bytes of body one consumer may hold: the bound plus one body."""
        return self.bound + self.body


class Big(herald.Event, type="footprint.big"):
    seq: int
    blob: str


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"failed: {type(exc).__name__}: {text[-1] if text else ''}"


async def _publish_pings(url: str, count: int) -> None:
    """Publish the warm-up events; the app's queues are declared first (``herald run``
    logs "serving" before it subscribes: events published earlier would reach no queue)."""
    from .idle_app import Ping, service  # noqa: PLC0415 - the app module, imported where used

    async with herald.connect(url) as bus:
        for handler in service.handlers:
            await bus.broker.declare(handler.subscription)
        await bus.publish_many([Ping(text=f"warm {n}") for n in range(count)])


def measure_idle(
    broker: str, run_id: str, warmup: int = 200, settle: float = 3.0, timeout: float = 60.0
) -> IdleResult:
    """The RSS of ``herald run`` serving the idle app on ``broker``, after warm-up."""
    result = IdleResult(broker, warmup=warmup)
    url = broker_url(broker, f"{run_id}idle")
    out = Path(tempfile.mkdtemp(prefix="herald-idle-")) / "handled.txt"
    out.touch()
    env = {**os.environ, "IDLE_APP_OUT": str(out), "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "herald",
        "--broker",
        url,
        "run",
        "benchmarks.idle_app:service",
    ]
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    serving = threading.Event()

    def drain() -> None:  # read every log line, so the pipe never fills
        assert process.stderr is not None
        for line in process.stderr:
            if "serving" in line:
                serving.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while not serving.wait(0.1):
            if process.poll() is not None or time.monotonic() > deadline:
                result.status = f"failed: herald run did not serve (exit {process.poll()})"
                return result
        asyncio.run(_publish_pings(url, warmup))
        while len(out.read_text().splitlines()) < warmup:
            if time.monotonic() > deadline:
                result.status = "failed: warm-up events not handled in time"
                return result
            time.sleep(0.1)
        time.sleep(settle)
        result.rss = rss(process.pid)
    except Exception as exc:
        result.status = _short(exc)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        try:
            asyncio.run(asyncio.wait_for(cleanup_url(url), 60))
        except Exception as exc:
            print(f"  cleanup of {broker} failed: {exc!r}", flush=True)
        out.unlink(missing_ok=True)
        out.parent.rmdir()
    return result


def _consumer_main(url: str, total: int, bound: int, pause: float, conn: Connection) -> None:
    async def main() -> dict[str, Any]:
        service = herald.Service("footprint", concurrency=16, prefetch_bytes=bound)
        done = asyncio.Event()
        state = {"handled": 0, "held": 0, "held_max": 0}

        @service.on(Big)
        async def slow(event: Big) -> None:
            state["held"] += 1
            state["held_max"] = max(state["held_max"], state["held"])
            await asyncio.sleep(pause)
            state["held"] -= 1
            state["handled"] += 1
            if state["handled"] >= total:
                done.set()

        async with herald.connect(url) as bus:
            baseline = rss()
            started = time.perf_counter()
            worker = await bus.start(service)
            await done.wait()
            seconds = time.perf_counter() - started
            await worker.stop()
        return {
            "baseline_rss": baseline,
            "peak_rss": rss(field_name="VmHWM"),
            "held_max": state["held_max"],
            "seconds": seconds,
        }

    try:
        conn.send(("result", asyncio.run(main())))
    except BaseException as exc:
        conn.send(("error", _short(exc)))
        raise
    finally:
        conn.close()


async def _fill(url: str, backlog: int, body: int) -> None:
    blob = "x" * max(0, body - 40)
    async with herald.connect(url) as bus:
        service = herald.Service("footprint")
        service.on(Big)(_never)
        await bus.broker.declare(service.handlers[0].subscription)
        for start in range(0, backlog, 4):
            await bus.publish_many(
                [Big(seq=n, blob=blob) for n in range(start, min(start + 4, backlog))]
            )


async def _never(event: Big) -> None:
    raise RuntimeError("the filler never handles")


def measure_backlog(
    broker: str,
    run_id: str,
    backlog: int = 300,
    body: int = MiB,
    bound: int = 16 * MiB,
    handler_seconds: float = 0.05,
    timeout: float = 300.0,
) -> BacklogResult:
    """Peak RSS of one consumer working off ``backlog`` bodies of ``body`` bytes."""
    result = BacklogResult(broker, backlog, body, bound)
    url = broker_url(broker, f"{run_id}b{bound // MiB}")
    process = None
    try:
        asyncio.run(_fill(url, backlog, body))
        ctx = consumer_context()
        mine, theirs = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=_consumer_main, args=(url, backlog, bound, handler_seconds, theirs), daemon=True
        )
        process.start()
        theirs.close()
        if not mine.poll(timeout):
            result.status = f"failed: timed out after {timeout:.0f}s"
            return result
        kind, value = mine.recv()
        if kind == "error":
            result.status = str(value)
            return result
        result.baseline_rss = value["baseline_rss"]
        result.peak_rss = value["peak_rss"]
        result.held_max = value["held_max"]
        result.seconds = value["seconds"]
    except Exception as exc:
        result.status = _short(exc)
    finally:
        if process is not None:
            process.join(15)
            if process.is_alive():
                process.terminate()
                process.join(5)
        try:
            asyncio.run(asyncio.wait_for(cleanup_url(url), 60))
        except Exception as exc:
            print(f"  cleanup of {broker} failed: {exc!r}", flush=True)
    return result
