"""The servers the suite runs against: how to check, isolate and restart them.

One place for each: `require_port` (fail in CI, skip on a laptop), `wait_port` and
`wait_port_closed`, and restarts that prove they happened (a process was stopped, its
port closed, a new process answers).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NATS_START = [
    "start-stop-daemon", "--start", "--background", "--exec", "/usr/sbin/nats-server",
    "--", "-a", "127.0.0.1", "-p", "4222", "-js", "-sd", "/var/lib/nats-server",
    "-l", "/var/log/nats-server.log",
]  # fmt: skip
REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} did not come back within {timeout}s")
        time.sleep(0.2)


def wait_port_closed(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while port_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} still open {timeout}s after its server was stopped")
        time.sleep(0.1)


def unavailable(message: str) -> None:
    """Fail in CI (every server must be there), skip on a laptop."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: it must be available)")
    pytest.skip(message)


def require_port(port: int, what: str) -> None:
    if not port_open(port):
        unavailable(f"{what} not reachable on 127.0.0.1:{port}")


def require_command(command: str, package: str) -> str:
    path = shutil.which(command)
    if path is None:
        unavailable(f"{command} not installed (apt-get install {package})")
    assert path is not None
    return path


def pids_of(name: str) -> list[int]:
    found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def _stop_pids(name: str, port: int, timeout: float = 30.0) -> list[int]:
    """SIGTERM every ``name`` process; return once each has exited and the port closed
    (SIGKILL for one still there at ``timeout``)."""
    pids = pids_of(name)
    if not pids:
        raise RuntimeError(f"no {name} process found to stop")
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive := [pid for pid in pids if _running(pid)]:
        if time.monotonic() > deadline:
            for pid in alive:
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.1)
    wait_port_closed(port)
    return pids


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def restart_rabbitmq() -> None:
    """Stop the RabbitMQ application (connections drop, the port closes), then start it."""

    def run() -> None:
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True)
        try:
            wait_port_closed(5672)
            time.sleep(1)
        finally:
            subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True)
        wait_port(5672)

    await asyncio.to_thread(run)


async def restart_nats() -> None:
    """SIGTERM every nats-server, require the port closed, start a new one."""

    def run() -> None:
        before = _stop_pids("nats-server", 4222)
        try:
            time.sleep(0.5)
        finally:
            subprocess.run(NATS_START, check=True, capture_output=True)
        wait_port(4222)
        after = pids_of("nats-server")
        if not after or set(after) & set(before):
            raise RuntimeError(f"nats-server did not restart: pids {before} -> {after}")

    await asyncio.to_thread(run)


@dataclass(frozen=True)
class BrokerSpec:
    """A broker under test: how to build an isolated URL, its port, how to restart it."""

    scheme: str
    make_url: Callable[[str, Path], str]
    port: int | None = None
    restart: Callable[[], Awaitable[None]] | None = None

    def require(self) -> None:
        if self.port is not None:
            require_port(self.port, f"{self.scheme} server")


SPECS = [
    BrokerSpec("memory", lambda token, tmp: f"memory://conformance-{token}"),
    BrokerSpec("sqlite", lambda token, tmp: f"sqlite:///{tmp}/herald-{token}.db?retain=1h"),
    BrokerSpec(
        "amqp",
        lambda token, tmp: (
            f"amqp://guest:guest@127.0.0.1:5672/?namespace=t{token}"
            "&management=http://127.0.0.1:15672"
        ),
        5672,
        restart_rabbitmq,
    ),
    BrokerSpec(
        "nats", lambda token, tmp: f"nats://127.0.0.1:4222?namespace=t{token}", 4222, restart_nats
    ),
    BrokerSpec("redis", lambda token, tmp: f"redis://127.0.0.1:6379/0?namespace=t{token}", 6379),
    BrokerSpec("sqs", lambda token, tmp: _sqs_url(f"t{token}")),
    BrokerSpec("kafka", lambda token, tmp: _kafka_url(f"t{token}")),
]


def _kafka_url(namespace: str) -> str:
    """Tansu, started by the tests on a loopback port (see docs/kafka.md)."""
    from .brokers.kafka.server import kafka_url  # noqa: PLC0415 - it imports this module

    return kafka_url(namespace)


def _sqs_url(namespace: str) -> str:
    """moto, started by the tests on a loopback port (FIFO queues: see docs/sqs.md)."""
    from .brokers.sqs.server import sqs_url  # noqa: PLC0415 - it imports this module

    return sqs_url(namespace)


__all__ = [
    "IN_CI",
    "NATS_START",
    "REDIS_START",
    "SPECS",
    "BrokerSpec",
    "pids_of",
    "port_open",
    "require_command",
    "require_port",
    "restart_nats",
    "restart_rabbitmq",
    "unavailable",
    "wait_port",
    "wait_port_closed",
]
