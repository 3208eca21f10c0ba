"""Private ``redis-server`` processes that a test owns: its own port, its own directory.

Tests that stop, restart or kill a server use one of these, never the shared server
on 6379. The helper refuses to pretend: starting fails when the port is already
taken (no "do nothing if running"), and stopping fails unless this helper's own
process was running, exited, and its port closed.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ...servers import IN_CI, port_open

__all__ = ["RedisServer", "free_port", "private_server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One private server. ``durable``: ``appendonly yes, appendfsync always`` (what
    a confirmed publish needs to survive a restart or a crash); otherwise nothing is
    kept on disk, like the shared server."""

    def __init__(
        self,
        workdir: Path,
        *,
        durable: bool,
        port: int | None = None,
        password: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.durable = durable
        self.port = port or free_port()
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, namespace: str = "t", **options: object) -> str:
        auth = f":{self.password}@" if self.password else ""
        query = "".join(f"&{k}={v}" for k, v in options.items())
        return f"redis://{auth}127.0.0.1:{self.port}/0?namespace={namespace}{query}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"redis-server on {self.port} is already running")
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken: refusing to start a server there")
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--daemonize", "no", "--save", "",
            "--appendonly", "yes" if self.durable else "no", "--appendfsync", "always",
            "--logfile", str(self.workdir / f"redis-{self.port}.log"),
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not port_open(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"redis-server did not open port {self.port}")
            time.sleep(0.02)

    def stop(self, *, kill: bool = False) -> None:
        """Stop this helper's server: SIGTERM (a clean shutdown, the AOF complete) or
        SIGKILL (a crash). Fails unless it was running, exited and its port closed."""
        process = self.process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"no redis-server process of this helper runs on {self.port}")
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        code = process.wait(timeout=30)
        self.process = None
        if not kill and code != 0:
            raise RuntimeError(f"redis-server (pid {process.pid}) exited with {code}")
        deadline = time.monotonic() + 10
        while port_open(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} still open after pid {process.pid} exited")
            time.sleep(0.02)

    def restart(self) -> None:
        self.stop()
        self.start()


def private_server(
    workdir: Path, *, durable: bool, password: str | None = None
) -> Iterator[RedisServer]:
    """Fixture body: a started server, killed at the end if the test left it running."""
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is not installed (CI=true)")
        pytest.skip("redis-server is not installed")
    server = RedisServer(workdir, durable=durable, password=password)
    server.start()
    try:
        yield server
    finally:
        if server.running:
            server.stop(kill=True)
