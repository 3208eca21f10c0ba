"""The supervisor: the whole HR platform as four OS processes on one broker.

``run_platform`` starts ``employees``, ``hr-web``, ``payroll`` and ``giftcards`` (minus
those in ``without``), prints where to find them, restarts a service that crashes
(after 1 s, doubling up to 30 s while it keeps crashing within a minute of its
start), and on SIGINT/SIGTERM stops them all: SIGTERM first, so each finishes its
running handlers, then SIGKILL for any still alive after ``stop_timeout`` seconds.
The broker URL reaches the services through ``HERALD_BROKER``, never on a command
line, so its password does not show in process listings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from herald.signals import stop_on_signals
from herald.url import redact_url

from . import DEFAULT_BROKER, DEFAULT_PORTS, SERVICES

__all__ = ["ManagedService", "command", "main", "run_platform"]

log = logging.getLogger("hr_platform.supervisor")
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0


def command(name: str, *, port: int | None, data_dir: str | Path) -> list[str]:
    """The command line that runs service ``name`` (broker from ``HERALD_BROKER``)."""
    argv = [sys.executable, "-m", "hr_platform", name, "--data-dir", str(data_dir)]
    if port is not None:
        argv += ["--port", str(port)]
    return argv


@dataclass
class ManagedService:
    """One child process and its restart bookkeeping."""

    name: str
    argv: list[str]
    env: Mapping[str, str]
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    backoff: float = 1.0
    restarts: int = 0
    stopping: bool = field(default=False)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, env=dict(self.env), start_new_session=True
        )
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)

    async def keep_running(self) -> None:
        """Restart the process whenever it exits, until ``stopping``."""
        while not self.stopping:
            assert self.process is not None
            code = await self.process.wait()
            if self.stopping:
                return
            if time.monotonic() - self.started_at > STABLE_AFTER:
                self.backoff = 1.0
            self.restarts += 1
            log.warning(
                "%s exited with status %s; restart #%d in %.0fs",
                self.name,
                code,
                self.restarts,
                self.backoff,
            )
            print(f"supervisor: {self.name} exited ({code}); restarting in {self.backoff:.0f}s")
            await asyncio.sleep(self.backoff)
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)
            if not self.stopping:
                await self.start()

    async def stop(self, timeout: float) -> None:
        self.stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def run_platform(
    broker_url: str = DEFAULT_BROKER,
    *,
    without: set[str] | frozenset[str] = frozenset(),
    ports: Mapping[str, int] | None = None,
    data_dir: str | Path = "./var",
    stop_timeout: float = 15.0,
) -> None:
    """Run the platform until SIGINT/SIGTERM (or cancellation)."""
    unknown = set(without) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown service(s) {sorted(unknown)}; choose from {SERVICES}")
    chosen_ports = {**DEFAULT_PORTS, **(ports or {})}
    env = {**os.environ, "HERALD_BROKER": broker_url}
    await asyncio.to_thread(Path(data_dir).mkdir, parents=True, exist_ok=True)
    services = [
        ManagedService(name, command(name, port=chosen_ports.get(name), data_dir=data_dir), env)
        for name in SERVICES
        if name not in without
    ]
    print(f"HR platform on {redact_url(broker_url)} (data in {data_dir})", flush=True)
    for service in services:
        await service.start()
        port = chosen_ports.get(service.name)
        if port is not None:
            path = "/employees" if service.name == "hr-web" else f"/{service.name}"
            print(f"  {service.name:<10} http://127.0.0.1:{port}{path}", flush=True)
    if without:
        print(f"  not started: {', '.join(sorted(without))}", flush=True)
    print("Ctrl-C stops everything.", flush=True)
    watchers = [asyncio.create_task(s.keep_running()) for s in services]
    try:
        with stop_on_signals() as stop:
            await stop.wait()
    finally:
        print("supervisor: stopping all services", flush=True)
        for service in services:
            service.stopping = True
        await asyncio.gather(*(s.stop(stop_timeout) for s in services))
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hr_platform platform", description="Run the whole HR platform."
    )
    parser.add_argument(
        "--broker", help=f"broker URL (default: $HERALD_BROKER or {DEFAULT_BROKER})"
    )
    parser.add_argument("--without", action="append", default=[], choices=SERVICES)
    parser.add_argument("--data-dir", default="./var")
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port, metavar="N")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s supervisor %(levelname)s: %(message)s")
    ports = {name: getattr(args, f"{name.replace('-', '_')}_port") for name in DEFAULT_PORTS}
    broker = args.broker or os.environ.get("HERALD_BROKER") or DEFAULT_BROKER
    asyncio.run(
        run_platform(broker, without=set(args.without), ports=ports, data_dir=args.data_dir)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
