"""A test harness for the HR platform: each service as a real OS process on a real broker."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from herald.testing import eventually

from ..brokers.kafka.server import kafka_url, shared_tansu
from ..brokers.sqs.server import shared_endpoint, sqs_url
from ..servers import require_port

__all__ = [
    "BROKERS",
    "Platform",
    "broker_url",
    "eventually",
    "free_port",
    "require_broker",
    "same_origin",
]

BROKERS = ("sqlite", "amqp", "sqs", "kafka")
READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def same_origin(request: httpx.Request) -> None:
    """An httpx request hook: say the request comes from the server's own pages, as a
    browser does (hr-web refuses a POST, PUT, PATCH or DELETE without an Origin)."""
    request.headers.setdefault("Origin", f"{request.url.scheme}://{request.url.netloc.decode()}")


def require_broker(scheme: str) -> None:
    """Fail in CI, skip elsewhere, when the broker's server is not running."""
    if scheme == "amqp":
        require_port(5672, "RabbitMQ")
    if scheme == "sqs":
        shared_endpoint()  # moto, started on a loopback port (skips where not installed)
    if scheme == "kafka":
        shared_tansu()  # Tansu, started on a loopback port (skips where not installed)


def broker_url(scheme: str, workdir: Path) -> str:
    token = uuid.uuid4().hex[:10]
    if scheme == "sqlite":
        return f"sqlite:///{workdir}/herald.db"
    if scheme == "sqs":
        return sqs_url(f"hr{token}")  # FIFO: payroll gets each employee's changes in order
    if scheme == "kafka":
        return kafka_url(f"hr{token}")
    return f"amqp://guest:guest@127.0.0.1:5672/?namespace=hr{token}"


@dataclass
class Platform:
    """The four services as processes, started and stopped one by one."""

    broker: str
    workdir: Path
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    http: httpx.AsyncClient = field(
        default_factory=lambda: httpx.AsyncClient(
            timeout=30, event_hooks={"request": [same_origin]}
        )
    )

    def __post_init__(self) -> None:
        for name in ("employees", "hr-web", "payroll", "giftcards"):
            self.ports.setdefault(name, free_port())

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def running(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.returncode is None

    async def start(self, *names: str, args: Sequence[str] = ()) -> None:
        for name in names:
            await self.spawn(name, None, *args)
        for name in names:
            await self.wait_ready(name)

    async def spawn(self, name: str, service: str | None = None, *options: str) -> None:
        """Start process ``name`` running ``service`` (default: ``name``; a replica
        such as ``payroll-2`` names its service) with more command-line ``options``;
        it shares the service's database (``--data-dir``) and gets a port of its own."""
        self.ports.setdefault(name, free_port())
        log = (self.workdir / f"{name}.log").open("ab")
        argv = [sys.executable, "-m", "hr_platform", service or name]
        argv += ["--port", str(self.ports[name]), "--data-dir", str(self.workdir)]
        argv += ["--log-level", "WARNING", *options]
        env = {**os.environ, "HERALD_BROKER": self.broker}
        self.processes[name] = await asyncio.create_subprocess_exec(
            *argv, stdout=log, stderr=log, env=env
        )
        log.close()

    async def wait_ready(self, name: str, probe: str = "/healthz") -> None:
        """Wait until ``name`` answers ``probe`` with 200 (``/readyz``: consuming)."""

        async def ready() -> bool:
            if not self.running(name):
                raise AssertionError(f"{name} exited early:\n{self.log(name)}")
            try:
                response = await self.http.get(self.url(name, probe), timeout=2)
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        await eventually(ready, timeout=READY_TIMEOUT, what=f"{name} to be ready", interval=0.1)

    async def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        process = self.processes[name]
        if process.returncode is None:
            process.send_signal(sig)
        return await asyncio.wait_for(process.wait(), 30)

    async def kill(self, name: str) -> int:
        return await self.stop(name, signal.SIGKILL)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in self.processes), return_exceptions=True)
        await self.http.aclose()

    async def create(self, index: int, prefix: str = "e") -> httpx.Response:
        """Create an employee through hr-web's JSON API."""
        return await self.http.post(
            self.url("hr-web", "/api/employees"),
            json={
                "first_name": f"First{index}",
                "last_name": f"Last{index}",
                "email": f"{prefix}{index}.{uuid.uuid4().hex[:6]}@example.com",
                "salary": str(40000 + index),
            },
        )

    async def records(self, name: str) -> list[dict[str, Any]]:
        path = {"payroll": "/api/payroll", "giftcards": "/api/giftcards"}[name]
        response = await self.http.get(self.url(name, path))
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    async def count(self, name: str) -> int:
        return len(await self.records(name))

    async def handled(self, name: str, queue: str | None = None) -> float:
        """Deliveries (from ``queue``, or all) the running process of ``name`` acked,
        from its ``/metrics``."""
        response = await self.http.get(self.url(name, "/metrics"))
        response.raise_for_status()
        return sum(
            sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == "herald_deliveries_handled_total"
            and sample.labels.get("outcome") == "acked"
            and queue in (None, sample.labels.get("queue"))
        )
