"""The supervisor: the whole HR platform as four OS processes on one broker.

``run_platform`` starts the Herald dashboard (``herald.dashboard``, first, so that its
URL is the first line printed), then ``employees``, ``hr-web``, ``payroll`` and
``giftcards`` (minus those in ``without``), prints where to find them, restarts a
service that crashes (after 1 s, doubling up to 30 s while it keeps crashing within a minute of its
start), and on SIGINT/SIGTERM stops them all: SIGTERM first, so each finishes its
running handlers, then SIGKILL for any still alive after ``stop_timeout`` seconds.
The broker URL reaches the services through ``HERALD_BROKER``, never on a command
line, so its password does not show in process listings. The dashboard gets
:class:`Controls`: from the browser each service can be stopped, and started again (or
for the first time, one left out with ``without``).
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

from herald.dashboard import ServiceControls, ServiceState
from herald.signals import stop_on_signals
from herald.url import redact_url

from . import DEFAULT_BROKER, DEFAULT_PORTS, SERVICES

__all__ = ["DASHBOARD_PORT", "Controls", "ManagedService", "command", "main", "run_platform"]

log = logging.getLogger("hr_platform.supervisor")
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0
DASHBOARD_PORT = 8080
"""The dashboard's port unless ``ports["dashboard"]`` says otherwise (0: none)."""


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

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

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


class Controls(ServiceControls):
    """Start and stop the supervised services (for the dashboard's demo controls)."""

    def __init__(self, services: Sequence[ManagedService], stop_timeout: float) -> None:
        self.services = {service.name: service for service in services}
        self.stop_timeout = stop_timeout
        self.watchers: dict[str, asyncio.Task[None]] = {}

    def states(self) -> list[ServiceState]:
        return [
            ServiceState(
                name=s.name,
                running=s.running and not s.stopping,
                pid=s.process.pid if s.process is not None and s.running else None,
                restarts=s.restarts,
            )
            for s in self.services.values()
        ]

    async def start(self, name: str) -> None:
        service = self.services[name]
        if service.running and not service.stopping:
            return
        if service.running:  # still stopping: let it finish first
            await service.stop(self.stop_timeout)
        service.stopping = False
        await service.start()
        print(f"supervisor: started {name}", flush=True)
        self.watchers[name] = asyncio.create_task(service.keep_running())

    async def stop(self, name: str) -> None:
        service = self.services[name]
        await service.stop(self.stop_timeout)
        print(f"supervisor: stopped {name}", flush=True)
        watcher = self.watchers.pop(name, None)
        if watcher is not None:
            watcher.cancel()

    async def stop_all(self) -> None:
        for service in self.services.values():
            service.stopping = True
        await asyncio.gather(*(s.stop(self.stop_timeout) for s in self.services.values()))
        watchers, self.watchers = list(self.watchers.values()), {}
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


async def _dashboard(
    broker_url: str, port: int, data_dir: str | Path, controls: Controls, stop: asyncio.Event
) -> asyncio.Task[None] | None:
    """Serve the dashboard in this process; returns once it listens (None when it
    cannot run: its URL is then not printed, the platform runs without it)."""
    from herald.dashboard.server import serve_dashboard  # noqa: PLC0415 (optional)

    ready = asyncio.Event()

    def announce(url: str) -> None:
        print(f"Herald dashboard {url}", flush=True)
        ready.set()

    task = asyncio.create_task(
        serve_dashboard(
            broker_url,
            port=port,
            db_path=Path(data_dir) / "dashboard.db",
            controls=controls,
            on_ready=announce,
            stop=stop,
        )
    )
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if not ready.is_set():
        waiter.cancel()
        error = task.exception()
        log.warning("the dashboard did not start: %s", error)
        print(f"supervisor: no dashboard ({error})", flush=True)
        return None
    return task


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
    ]
    controls = Controls(services, stop_timeout)
    dashboard_stop = asyncio.Event()
    dashboard_port = chosen_ports.get("dashboard", DASHBOARD_PORT)
    dashboard = None
    try:
        if dashboard_port:
            dashboard = await _dashboard(
                broker_url, dashboard_port, data_dir, controls, dashboard_stop
            )
        print(f"HR platform on {redact_url(broker_url)} (data in {data_dir})", flush=True)
        for service in services:
            if service.name in without:
                continue
            await controls.start(service.name)
            port = chosen_ports.get(service.name)
            if port is not None:
                path = "/employees" if service.name == "hr-web" else f"/{service.name}"
                print(f"  {service.name:<10} http://127.0.0.1:{port}{path}", flush=True)
        if without:
            print(f"  not started: {', '.join(sorted(without))}", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        with stop_on_signals() as stop:
            await stop.wait()
    finally:
        print("supervisor: stopping all services", flush=True)
        await controls.stop_all()
        dashboard_stop.set()
        if dashboard is not None:
            await asyncio.gather(dashboard, return_exceptions=True)


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
    parser.add_argument(
        "--dashboard-port", type=int, default=DASHBOARD_PORT, metavar="N", help="0: none"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s supervisor %(levelname)s: %(message)s")
    ports = {name: getattr(args, f"{name.replace('-', '_')}_port") for name in DEFAULT_PORTS}
    ports["dashboard"] = args.dashboard_port
    broker = args.broker or os.environ.get("HERALD_BROKER") or DEFAULT_BROKER
    asyncio.run(
        run_platform(broker, without=set(args.without), ports=ports, data_dir=args.data_dir)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
