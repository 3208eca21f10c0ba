"""A uvicorn server for a web app inside a larger asyncio program.

``WebServer`` leaves signals to its caller (uvicorn would install its own handlers
and swallow SIGTERM), says when it listens through ``ready``, and turns uvicorn's
``SystemExit`` on a port it cannot bind into an ``OSError`` naming the address.

>>> import asyncio
>>> async def main() -> str:
...     server = WebServer.for_app(lambda scope, receive, send: None, "127.0.0.1", 0)
...     serving = asyncio.create_task(server.serve())
...     await server.ready.wait()
...     server.should_exit = True
...     await serving
...     return "stopped"
>>> asyncio.run(main())
'stopped'
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

__all__ = ["WebServer"]


class WebServer(uvicorn.Server):
    """Uvicorn without its own signal handlers: the caller decides when to stop
    (``should_exit = True``)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @classmethod
    def for_app(cls, app: Any, host: str, port: int) -> WebServer:
        """A quiet server of ``app`` (no access log, no lifespan) on ``host:port``."""
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
        return cls(config)

    @property
    def port(self) -> int:
        """The port it listens on (the one the system chose for port 0), once ready."""
        if self.servers and self.servers[0].sockets:
            return int(self.servers[0].sockets[0].getsockname()[1])
        return self.config.port

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit:  # uvicorn exits the process when it cannot bind
            raise OSError(f"cannot listen on {self.config.host}:{self.config.port}") from None
        self.ready.set()
