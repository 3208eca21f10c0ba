"""Protection of the dashboard's state-changing requests (placeholder seam).

``protect(app, ...)`` is where the shared request guard (Host allow-list, Origin check
for state-changing requests, token when bound beyond loopback) plugs in. Until it is
available this minimal version refuses a state-changing request whose ``Origin``
(or, without one, ``Referer``) is not this dashboard, and requires the token (header
``Authorization: Bearer T``, or the cookie set by visiting ``/?token=T``) when given.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse, RedirectResponse
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

__all__ = ["TOKEN_COOKIE", "protect"]

TOKEN_COOKIE = "herald-dashboard-token"
_SAFE = frozenset(("GET", "HEAD", "OPTIONS"))


def _authorised(request: Request, token: str) -> bool:
    offered = request.cookies.get(TOKEN_COOKIE, "")
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        offered = header[7:]
    return secrets.compare_digest(offered.encode(), token.encode())


def protect(app: FastAPI, *, token: str | None = None) -> None:
    """Add the guard to ``app``."""

    async def guard(request: Request, call_next: RequestResponseEndpoint) -> Response:
        if token is not None:
            offered = request.query_params.get("token")
            if offered is not None and secrets.compare_digest(offered.encode(), token.encode()):
                response = RedirectResponse(request.url.path, status_code=303)
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
                return response
            if not _authorised(request, token):
                return PlainTextResponse("a token is required (visit /?token=...)", 401)
        if request.method not in _SAFE:
            origin = request.headers.get("origin") or request.headers.get("referer")
            host = request.headers.get("host", "")
            if not origin or urlsplit(origin).netloc != host:
                return PlainTextResponse(
                    f"cross-site request refused: Origin {origin!r} is not this dashboard",
                    403,
                )
        return await call_next(request)

    app.add_middleware(BaseHTTPMiddleware, dispatch=guard)
