"""hr-web create-employee latency under load, with payroll down vs payroll running.

Each scenario starts a fresh HR platform (each service its own OS process, as
``python -m hr_platform <service>``, on a fresh broker) with employees, hr-web and
giftcards, plus payroll for the baseline only, then drives ``POST /api/employees``
with ``--concurrency`` concurrent clients for ``--creates`` creates (after a short
unmeasured warm-up). Every process is stopped at the end of its scenario.

    python -m benchmarks.hrweb_bench [--quick] [--brokers sqlite,amqp]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

import herald

from .rpc_bench import percentile, table

__all__ = ["Result", "main"]

READY_TIMEOUT = 40.0
SERVICES = ("employees", "hr-web", "giftcards")


@dataclass(slots=True)
class Result:
    """Create latencies (ms) of one scenario."""

    broker: str
    label: str
    baseline: bool
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    failures: int = 0
    error: str = ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Platform:
    """The HR services as child processes sharing one broker and one data directory."""

    def __init__(self, broker: str, workdir: Path) -> None:
        self.broker = broker
        self.workdir = workdir
        self.ports: dict[str, int] = {}
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    async def start(self, services: Sequence[str], http: httpx.AsyncClient) -> None:
        for name in services:
            self.ports[name] = _free_port()
            argv = [sys.executable, "-m", "hr_platform", name, "--port", str(self.ports[name])]
            argv += ["--data-dir", str(self.workdir), "--log-level", "WARNING"]
            with (self.workdir / f"{name}.log").open("ab") as log:
                self.processes[name] = await asyncio.create_subprocess_exec(
                    *argv, stdout=log, stderr=log, env={**os.environ, "HERALD_BROKER": self.broker}
                )
        for name in services:
            await self._wait_ready(name, http)

    async def _wait_ready(self, name: str, http: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.processes[name].returncode is not None:
                log = (self.workdir / f"{name}.log").read_text(errors="replace").strip()
                raise RuntimeError(f"{name} exited early: {log.splitlines()[-1:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(self.url(name, "/healthz"), timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{name} not ready after {READY_TIMEOUT:.0f}s")

    async def stop(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _load(
    http: httpx.AsyncClient, url: str, creates: int, concurrency: int, result: Result
) -> None:
    counter = iter(range(creates))
    origin = str(httpx.URL(url).copy_with(path="/")).rstrip("/")

    async def create(index: int) -> bool:
        response = await http.post(
            url,
            headers={"Origin": origin},
            json={
                "first_name": f"First{index}",
                "last_name": f"Last{index}",
                "email": f"b{index}.{uuid.uuid4().hex[:8]}@example.com",
                "salary": str(40000 + index),
            },
        )
        return response.status_code == 201

    async def client() -> None:
        for index in counter:
            t0 = time.perf_counter_ns()
            ok = await create(index)
            if ok:
                result.latencies.append((time.perf_counter_ns() - t0) / 1e6)
            else:
                result.failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started


def _broker_url(scheme: str, workdir: Path) -> str:
    if scheme == "sqlite":
        return f"sqlite:///{workdir}/herald.db"
    return f"amqp://guest:guest@127.0.0.1:5672/?namespace=hrwb{uuid.uuid4().hex[:8]}"


async def _scenario(scheme: str, payroll: bool, creates: int, concurrency: int) -> Result:
    label = "payroll running (baseline)" if payroll else "payroll down"
    result = Result(scheme, label, payroll)
    with tempfile.TemporaryDirectory(prefix="hrweb-bench-") as tmp:
        workdir = Path(tmp)
        broker = _broker_url(scheme, workdir)
        platform = Platform(broker, workdir)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            try:
                services = [*SERVICES, "payroll"] if payroll else list(SERVICES)
                await platform.start(services, http)
                url = platform.url("hr-web", "/api/employees")
                await _load(
                    http, url, max(8, creates // 25), concurrency, Result(scheme, "", False)
                )
                await _load(http, url, creates, concurrency, result)
            except Exception as exc:
                result.error = f"{type(exc).__name__}: {exc}"
            finally:
                await platform.stop()
                if scheme != "sqlite":
                    with contextlib.suppress(Exception):
                        async with herald.connect(broker) as bus:
                            await bus.broker.destroy()
    return result


def render(results: Sequence[Result]) -> str:
    base = {r.broker: r for r in results if r.baseline and not r.error and r.latencies}
    headers = ["broker", "scenario", "creates", "failed", "p50 ms", "p95 ms", "p99 ms"]
    headers += ["mean ms", "creates/s", "p99 ratio", "ratio"]
    rows = []
    for r in results:
        if r.error or not r.latencies:
            why = r.error or "no successful creates"
            rows.append(
                [r.broker, r.label, "-", str(r.failures), *["-"] * 6, f"failed: {why[:60]}"]
            )
            continue
        p99 = percentile(r.latencies, 0.99)
        rate = len(r.latencies) / r.seconds
        ref = base.get(r.broker)
        p99_ratio = rate_ratio = "baseline" if r.baseline else "-"
        if ref is not None and not r.baseline:
            p99_ratio = f"{p99 / percentile(ref.latencies, 0.99):.2f}x"
            rate_ratio = f"{rate / (len(ref.latencies) / ref.seconds):.2f}x"
        rows.append(
            [
                r.broker,
                r.label,
                str(len(r.latencies)),
                str(r.failures),
                f"{percentile(r.latencies, 0.50):.1f}",
                f"{percentile(r.latencies, 0.95):.1f}",
                f"{p99:.1f}",
                f"{statistics.fmean(r.latencies):.1f}",
                f"{rate:,.1f}",
                p99_ratio,
                rate_ratio,
            ]
        )
    return table(headers, rows, left=2)


async def run(brokers: Sequence[str], creates: int, concurrency: int) -> list[Result]:
    results = []
    for scheme in brokers:
        for payroll in (True, False):
            results.append(await _scenario(scheme, payroll, creates, concurrency))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hrweb_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    parser.add_argument("--creates", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--brokers", default="sqlite,amqp", help="comma-separated: sqlite,amqp")
    args = parser.parse_args(argv)
    creates = 16 if args.quick else args.creates
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    if unknown := set(brokers) - {"sqlite", "amqp"}:
        parser.error(f"unknown brokers: {', '.join(sorted(unknown))}")
    results = asyncio.run(run(brokers, creates, args.concurrency))
    print(f"hr-web POST /api/employees: {creates} creates at concurrency {args.concurrency}")
    print("(after a warm-up); each service a separate process; employees, hr-web, giftcards")
    print("running, payroll started only for the baseline; ratio = creates/s vs baseline")
    print()
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
