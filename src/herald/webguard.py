"""A local web app's guard against other sites open in the same browser.

``WebGuard`` is pure ASGI middleware (Starlette, FastAPI, any ASGI app). Each request
passes four checks, in this order, and a refusal names what was wrong:

1. **Host** (DNS rebinding: a page on ``evil.example`` whose name now resolves to
   127.0.0.1): the ``Host`` header must name an allowed host, else 400 ``Invalid host
   header``. This is Starlette's own ``TrustedHostMiddleware``, used as it is; it
   compares names, not ports (rebinding changes the name).
2. **Token**, when one is configured: ``Authorization: Bearer <token>``, or the cookie
   set by opening ``/?token=<token>`` once (HttpOnly, SameSite=Strict, one per port);
   else 401.
3. **Origin**: a POST, PUT, PATCH or DELETE (and a WebSocket handshake) must carry an
   ``Origin``, or without one a ``Referer``, on an allowed host *and port*, else 403. A
   request authenticated by ``Authorization: Bearer`` is exempt: a browser never adds
   that header by itself, so such a request was not forged by another page.
4. **JSON**: under ``json_paths``, a state-changing request with a body must say
   ``application/json`` (or ``application/*+json``), else 415. A browser sends a
   ``text/plain`` (or untyped) body cross-site without asking; ``application/json`` it
   sends only after a CORS preflight, which nobody here answers.

Starlette has nothing for checks 2-4 (its ``CORSMiddleware`` grants cross-origin access,
it does not refuse it), so they are written here by hand.

>>> import asyncio, httpx
>>> from starlette.applications import Starlette
>>> app = WebGuard(Starlette(), allowed_hosts=local_hosts("127.0.0.1", 8000))
>>> async def post(url: str, **headers: str) -> httpx.Response:
...     async with httpx.AsyncClient(transport=httpx.ASGITransport(app)) as client:
...         return await client.post(url, headers=headers)
>>> asyncio.run(post("http://evil.example:8000/")).text
'Invalid host header'
>>> asyncio.run(post("http://127.0.0.1:8000/", Origin="http://evil.example")).text
"POST refused: its Origin 'http://evil.example' is not this site"
>>> asyncio.run(post("http://127.0.0.1:8000/", Origin="http://127.0.0.1:8000")).status_code
404
>>> requires_token("127.0.0.1"), requires_token("0.0.0.0")
(False, True)
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

__all__ = ["WebGuard", "local_hosts", "requires_token"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::", "[::]"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
COOKIE_LABEL = b"herald.webguard cookie"


def local_hosts(host: str, port: int | None = None) -> list[str]:
    """The hosts a server bound to ``host:port`` answers to by default: ``host`` itself
    (unless it is a wildcard address), ``localhost``, ``127.0.0.1`` and ``[::1]``, each
    with ``port`` (``None``: any port).

    >>> local_hosts("127.0.0.1", 8000)
    ['127.0.0.1:8000', 'localhost:8000', '[::1]:8000']
    >>> local_hosts("::1")
    ['[::1]', 'localhost', '127.0.0.1']
    """
    names = [] if host in WILDCARD_ADDRESSES else [_bracketed(host.lower())]
    names += [name for name in LOOPBACK_NAMES if name not in names]
    return [f"{name}:{port}" if port else name for name in names]


def requires_token(host: str) -> bool:
    """Whether a server bound to ``host`` is reachable beyond this machine, and so must
    not run without a token: anything but ``localhost`` and loopback addresses.

    >>> [requires_token(h) for h in ("localhost", "127.0.0.2", "::1", "0.0.0.0", "example.org")]
    [False, False, False, True, True]
    """
    if host.lower().rstrip(".") == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return True


class WebGuard:
    """ASGI middleware refusing requests another site could have made (see the module).

    ``allowed_hosts`` are ``name``, ``name:port`` or ``*.domain`` entries (a name without
    a port allows every port); ``token`` (``None``: no token) is required from every
    request except those under ``public_paths``; ``json_paths`` are the path prefixes of
    JSON endpoints.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Sequence[str],
        token: str | None = None,
        json_paths: Sequence[str] = (),
        public_paths: Sequence[str] = ("/healthz", "/readyz"),
    ) -> None:
        if not allowed_hosts:
            raise ValueError("WebGuard needs at least one allowed host")
        if token is not None and not token.strip():
            raise ValueError("WebGuard's token is empty")
        self.app = app
        self.allowed = [_host_and_port(entry) for entry in allowed_hosts]
        names = sorted({_bracketed(name) for name, _ in self.allowed})
        self.hosts = TrustedHostMiddleware(self._checked, allowed_hosts=names, www_redirect=False)
        self.token = token
        self.cookie_value = (
            hmac.new(token.encode(), COOKIE_LABEL, hashlib.sha256).hexdigest() if token else ""
        )
        self.json_paths = tuple(json_paths)
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            await self.hosts(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = HTTPConnection(scope)
        refusal, bearer = self._authenticate(conn)
        if refusal is None and not bearer:
            refusal = self._check_origin(conn)
        if refusal is None:
            refusal = self._check_content_type(conn)
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            reason = bytes(refusal.body).decode()[:120]
            await WebSocketClose(code=1008, reason=reason)(scope, receive, send)
        else:
            await refusal(scope, receive, send)

    def _authenticate(self, conn: HTTPConnection) -> tuple[Response | None, bool]:
        """A refusal (or the ``?token=`` visit's redirect), and whether the request
        proved itself with a bearer token."""
        if self.token is None or conn.url.path in self.public_paths:
            return None, False
        scheme, _, given = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            if _same(given.strip(), self.token):
                return None, True
            return self._refuse(conn, 401, "wrong token in the Authorization header"), False
        if "token" in conn.query_params and _method(conn) in ("GET", "HEAD"):
            if not _same(conn.query_params["token"], self.token):
                return self._refuse(conn, 401, "wrong token in ?token="), False
            return self._log_in(conn), False
        if _same(conn.cookies.get(_cookie_name(conn), ""), self.cookie_value):
            return None, False
        detail = (
            "this server needs its token: send 'Authorization: Bearer <token>', or open"
            " /?token=<token> once in this browser"
        )
        return self._refuse(conn, 401, detail), False

    def _log_in(self, conn: HTTPConnection) -> Response:
        """Redirect to the same page without the token, which now lives in a cookie."""
        query = conn.url.remove_query_params("token").query
        response = RedirectResponse(conn.url.path + (f"?{query}" if query else ""), 303)
        response.set_cookie(
            _cookie_name(conn),
            self.cookie_value,
            httponly=True,
            samesite="strict",
            secure=conn.url.scheme in ("https", "wss"),
        )
        return response

    def _check_origin(self, conn: HTTPConnection) -> Response | None:
        method = _method(conn)
        if method in SAFE_METHODS:
            return None
        header = "Origin" if "origin" in conn.headers else "Referer"
        given = conn.headers.get(header)
        if given is None:
            detail = (
                f"{method} refused: it has no Origin or Referer header, so it may come from"
                " another site"
            )
            return self._refuse(conn, 403, detail)
        if self._allows(given):
            return None
        return self._refuse(conn, 403, f"{method} refused: its {header} {given!r} is not this site")

    def _allows(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return False
        name = parts.hostname
        if port is None or not name:
            return False
        return any(
            _matches(name, allowed) and allowed_port in (None, port)
            for allowed, allowed_port in self.allowed
        )

    def _check_content_type(self, conn: HTTPConnection) -> Response | None:
        if _method(conn) in SAFE_METHODS or not conn.url.path.startswith(self.json_paths):
            return None
        length = conn.headers.get("content-length")
        if "transfer-encoding" not in conn.headers and length in (None, "0"):
            return None
        given = conn.headers.get("content-type", "")
        media = given.partition(";")[0].strip().lower()
        if media == "application/json" or (
            media.startswith("application/") and media.endswith("+json")
        ):
            return None
        said = f"not {given!r}" if given else "and the request has no Content-Type"
        return self._refuse(conn, 415, f"Content-Type must be application/json, {said}")

    def _refuse(self, conn: HTTPConnection, status: int, detail: str) -> Response:
        if self.json_paths and conn.url.path.startswith(self.json_paths):
            return JSONResponse({"detail": detail}, status_code=status)
        return PlainTextResponse(detail, status_code=status)


def _method(conn: HTTPConnection) -> str:
    # A WebSocket handshake is a GET that opens a two-way channel: checked like a POST.
    return str(conn.scope.get("method", "WEBSOCKET")).upper()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _cookie_name(conn: HTTPConnection) -> str:
    """Cookies ignore ports: one name per port keeps two local apps' tokens apart."""
    port = conn.url.port or DEFAULT_PORTS.get(conn.url.scheme, 0)
    return f"herald_token_{port}"


def _host_and_port(entry: str) -> tuple[str, int | None]:
    try:
        parts = urlsplit(f"//{entry.strip()}")
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"allowed host {entry!r} is not a host[:port]") from exc
    if not parts.hostname or parts.path or parts.query:
        raise ValueError(f"allowed host {entry!r} is not a host[:port]")
    return parts.hostname, port


def _matches(name: str, allowed: str) -> bool:
    if allowed.startswith("*"):
        return allowed == "*" or name.endswith(allowed[1:])
    return name == allowed


def _bracketed(name: str) -> str:
    return f"[{name}]" if ":" in name and not name.startswith("[") else name
