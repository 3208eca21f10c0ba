"""The connection to the NATS servers, and what happens when it drops.

``connect()`` tries each server a few times and then gives up with
:class:`herald.ConnectionLostError`; once connected, nats-py reconnects for ever
(re-subscribing core subscriptions such as reply inboxes), and the broker is told so
that its pull requests, lost with the old connection, are sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import nats
from nats.aio.client import Client

from .errors import TABLE
from .replies import INBOX_PREFIX
from .settings import NATSSettings

__all__ = ["CONNECT_ATTEMPTS", "STALE_PINGS", "open_connection"]

log = logging.getLogger("herald.brokers.nats")
CONNECT_ATTEMPTS = 3
"""Tries per server before ``connect()`` gives up (later reconnects never give up)."""
STALE_PINGS = 2
"""Pings left unanswered when the next is due that make nats-py drop a half-open
connection (one cut off without a close) and reconnect: detection within
``(STALE_PINGS + 1) * heartbeat`` seconds."""


async def open_connection(
    settings: NATSSettings, on_reconnected: Callable[[], None], in_use: Callable[[], bool]
) -> Client:
    """A connected client that reconnects for ever and reports each reconnection;
    ``in_use()`` tells whether the broker still uses it (else a disconnect is a close)."""
    shown = settings.shown_url

    async def error(exc: Exception) -> None:
        log.warning("NATS %s: %s", shown, TABLE.convert(exc, "the connection"))

    async def disconnected() -> None:
        if in_use():
            log.warning("NATS %s: disconnected; reconnecting", shown)

    async def reconnected() -> None:
        log.info("NATS %s: reconnected", shown)
        on_reconnected()

    with TABLE.converting(f"connecting to {shown}"):
        nc = await nats.connect(
            servers=settings.servers,
            user=settings.user,
            password=settings.password,
            tls=settings.ssl_context(),
            name="herald",
            inbox_prefix=INBOX_PREFIX,
            connect_timeout=int(max(settings.timeout, 1)),
            reconnect_time_wait=0.5,
            ping_interval=settings.heartbeat,
            max_outstanding_pings=STALE_PINGS,
            max_reconnect_attempts=CONNECT_ATTEMPTS,
            error_cb=error,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
        )
    nc.options["max_reconnect_attempts"] = -1  # once connected, reconnect for ever
    return nc
