"""The brokers the test suite runs against, and how to check, isolate and restart them."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NATS_START = [
    "start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/nats-server",
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


async def restart_rabbitmq() -> None:
    def run() -> None:
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True)
        try:
            time.sleep(2)
        finally:
            subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True)
        wait_port(5672)

    await asyncio.to_thread(run)


async def restart_nats() -> None:
    def run() -> None:
        pids = subprocess.run(
            ["pgrep", "-x", "nats-server"], capture_output=True, text=True, check=False
        )
        try:
            for pid in pids.stdout.split():
                os.kill(int(pid), 15)
            deadline = time.monotonic() + 20
            while port_open(4222) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1)
        finally:
            subprocess.run(NATS_START, check=True, capture_output=True)
        wait_port(4222)

    await asyncio.to_thread(run)


@dataclass(frozen=True)
class BrokerSpec:
    """A broker under test: how to build an isolated URL and whether its server is up."""

    scheme: str
    make_url: Callable[[str, Path], str]
    port: int | None = None
    restart: Callable[[], Awaitable[None]] | None = None

    def require(self) -> None:
        """Fail in CI, skip on a laptop, when the broker's server is not running."""
        if self.port is None or port_open(self.port):
            return
        message = f"{self.scheme} server not reachable on 127.0.0.1:{self.port}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: brokers must be running)")
        pytest.skip(message)


SPECS = [
    BrokerSpec("memory", lambda token, tmp: f"memory://conformance-{token}"),
    BrokerSpec("sqlite", lambda token, tmp: f"sqlite:///{tmp}/herald-{token}.db"),
    BrokerSpec(
        "amqp",
        lambda token, tmp: f"amqp://guest:guest@127.0.0.1:5672/?namespace=t{token}",
        5672,
        restart_rabbitmq,
    ),
    BrokerSpec(
        "nats", lambda token, tmp: f"nats://127.0.0.1:4222?namespace=t{token}", 4222, restart_nats
    ),
    BrokerSpec("redis", lambda token, tmp: f"redis://127.0.0.1:6379/0?namespace=t{token}", 6379),
]

__all__ = ["IN_CI", "SPECS", "BrokerSpec", "port_open", "shutil"]
