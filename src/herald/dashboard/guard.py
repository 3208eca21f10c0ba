"""Protection of the dashboard against other sites open in the same browser.

The dashboard is wrapped in :class:`herald.webguard.WebGuard`: the ``Host`` header must
name the address it serves (DNS rebinding), every state-changing request (stop, start,
replay, purge, edit) must come from the dashboard's own pages (``Origin``), and when a
token is set every request needs it (``Authorization: Bearer T``, or the cookie that
opening ``/?token=T`` once sets).
"""

from __future__ import annotations

from starlette.types import ASGIApp

from ..webguard import WebGuard, local_hosts, requires_token

__all__ = ["protect", "requires_token"]


def protect(app: ASGIApp, *, host: str, port: int | None, token: str | None) -> ASGIApp:
    """``app`` behind the guard, for a server bound to ``host:port`` (``port`` None:
    any port, for a server given port 0)."""
    return WebGuard(app, allowed_hosts=local_hosts(host, port or None), token=token)
