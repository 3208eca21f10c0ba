"""The moto server the SQS tests run against: started by the tests, on loopback.

One server per test session (:func:`shared_endpoint`), started on first use on a free
port of 127.0.0.1 and stopped when the session's process exits; tests that need a
server of their own (restarts) start a :class:`MotoServer`. Nothing is ever bound to
another interface.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ...servers import port_open, unavailable

__all__ = ["CREDENTIALS", "MotoServer", "free_port", "shared_endpoint", "sqs_url"]

CREDENTIALS = "test:test"
"""moto takes any credentials; the URL carries these so child processes need no env."""
_LAUNCHER = Path(__file__).with_name("launch_moto.py")
_SHARED: MotoServer | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class MotoServer:
    """One moto server process of this test session, on 127.0.0.1."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"moto on {self.port} is already running")
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken: refusing to start moto there")
        log = open(os.devnull, "wb")  # noqa: SIM115 - owned by the process
        command = [sys.executable, str(_LAUNCHER), "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        deadline = time.monotonic() + 30
        while not port_open(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"moto exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto did not open port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def shared_endpoint() -> str:
    """The session's moto endpoint, started on first use (skipped, or failed in CI,
    where moto is not installed)."""
    global _SHARED
    if importlib.util.find_spec("moto") is None:
        unavailable("moto is not installed (pip install 'moto[server]')")
    if _SHARED is None or _SHARED.process is None or _SHARED.process.poll() is not None:
        server = MotoServer()
        server.start()
        atexit.register(server.stop)
        _SHARED = server
    return _SHARED.endpoint


def sqs_url(namespace: str, endpoint: str | None = None, **options: object) -> str:
    """An ``sqs://`` URL on moto with the test options (FIFO unless told otherwise)."""
    settings: dict[str, object] = {"fifo": "true", "visibility": 10, "wait": 1, **options}
    query = "".join(f"&{k}={v}" for k, v in settings.items())
    endpoint = endpoint or shared_endpoint()
    return f"sqs://{CREDENTIALS}@us-east-1?endpoint={endpoint}&namespace={namespace}{query}"
