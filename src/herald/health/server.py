"""A small HTTP server for probes and metrics, in a thread of its own.

It serves WSGI applications by exact path (``/healthz``, ``/readyz``, ``/metrics``) on
one port, from a daemon thread, so a scrape or a probe never waits for the event
loop and keeps answering while handlers hog it. Paths it does not know get 404.
Only ``GET`` and ``HEAD`` are served.

>>> import urllib.request
>>> from herald.health.server import ProbeServer, text_app
>>> server = ProbeServer({"/hello": text_app(200, b"hi")}, port=0, host="127.0.0.1")
>>> server.start()
>>> with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/hello") as response:
...     response.status, response.read()
(200, b'hi')
>>> server.close()
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .probe import Health, Probe

__all__ = ["ProbeServer", "WSGIApp", "health_routes", "parse_address", "text_app"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes come every few seconds: no access log."""


def _respond(start_response: StartResponse, status: int, body: bytes, kind: str) -> list[bytes]:
    start_response(
        f"{status} {_REASONS.get(status, '')}".rstrip(),
        [("Content-Type", kind), ("Content-Length", str(len(body)))],
    )
    return [body]


def text_app(status: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> WSGIApp:
    """A WSGI app that always answers ``status`` with ``body``."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        return _respond(start_response, status, body, kind)

    return app


def _probe_app(probe: Callable[[], Probe]) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        answer = probe()
        return _respond(start_response, answer.status, answer.body(), "application/json")

    return app


def health_routes(health: Health) -> dict[str, WSGIApp]:
    """``/healthz`` and ``/readyz`` of ``health``, for :class:`ProbeServer`."""
    return {"/healthz": _probe_app(health.live), "/readyz": _probe_app(health.ready)}


def parse_address(text: str) -> tuple[str, int]:
    """``PORT`` or ``HOST:PORT`` as ``(host, port)``; the host defaults to every
    interface (``0.0.0.0``), as probes and scrapes come from outside.

    >>> parse_address("9100"), parse_address("127.0.0.1:9100")
    (('0.0.0.0', 9100), ('127.0.0.1', 9100))
    """
    host, _, port_text = text.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"expected PORT or HOST:PORT, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535, got {port}")
    return (host.strip("[]") or "0.0.0.0", port)


class ProbeServer:
    """Serves ``routes`` (path -> WSGI app) on ``host:port`` from a daemon thread.

    ``port=0`` picks a free port; :attr:`port` tells which once started.
    """

    def __init__(self, routes: Mapping[str, WSGIApp], *, port: int, host: str = "0.0.0.0") -> None:
        self.routes = dict(routes)
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"ProbeServer({self.host}:{self.port}, {sorted(self.routes)})"

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _respond(start_response, 405, b"only GET\n", "text/plain; charset=utf-8")
        app = self.routes.get(environ.get("PATH_INFO", ""))
        if app is None:
            known = ", ".join(sorted(self.routes)).encode()
            return _respond(start_response, 404, b"not found; try " + known + b"\n", "text/plain")
        return app(environ, start_response)

    def start(self) -> None:
        """Bind and serve; raises ``OSError`` when the port is taken."""
        server = make_server(
            self.host, self.port, self._app, server_class=_Server, handler_class=_QuietHandler
        )
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how soon close() is noticed
            name=f"herald-http:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
