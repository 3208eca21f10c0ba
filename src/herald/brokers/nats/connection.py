"""The connection to the NATS servers, and what happens when it drops.

``connect()`` tries each server a few times and then gives up with
:class:`herald.ConnectionLostError`; once connected, nats-py reconnects for ever
(re-subscribing core subscriptions such as reply inboxes), and the broker is told so
that its pull requests, lost with the old connection, are sent again.

Every received message's header block is parsed by nats-py; :class:`HeraldClient`
parses it to the same dict as nats-py 2.16 does, in half the time (nats-py tests each
character of each name in a generator): Herald's events carry seven headers each.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client

from .errors import TABLE
from .replies import INBOX_PREFIX
from .settings import NATSSettings

__all__ = ["CONNECT_ATTEMPTS", "STALE_PINGS", "HeraldClient", "open_connection"]

log = logging.getLogger("herald.brokers.nats")
CONNECT_ATTEMPTS = 3
"""Tries per server before ``connect()`` gives up (later reconnects never give up)."""
STALE_PINGS = 2
"""Pings left unanswered when the next is due that make nats-py drop a half-open
connection (one cut off without a close) and reconnect: detection within
``(STALE_PINGS + 1) * heartbeat`` seconds."""
_SPACE = re.compile(r"\s")
_CRLF = b"\r\n"


class HeraldClient(Client):
    """nats-py's client with a faster parser of received header blocks."""

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        """``Name: Value`` lines as nats-py reads them: split at the first ``:``, both
        sides stripped of ASCII blanks, lines without a ``:`` skipped, and so are names
        that are not ASCII or hold a blank; values decoded as UTF-8, bad bytes replaced.

        >>> HeraldClient._parse_header_lines(b"a: 1\\r\\nb:2 \\r\\nno colon\\r\\nc d: 3\\r\\n")
        {'a': '1', 'b': '2'}
        """
        out: dict[str, str] = {}
        for line in raw.split(_CRLF):
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            try:
                key = name.strip().decode("ascii")
            except UnicodeDecodeError:
                continue
            if _SPACE.search(key) is None:  # str.isspace's characters, as nats-py tests
                out[key] = value.strip().decode("utf-8", "replace")
        return out


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
        # Client.connect annotates as int what nats.connect() takes as any number
        options: dict[str, Any] = dict(
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
        nc = HeraldClient()
        await nc.connect(**options)
    nc.options["max_reconnect_attempts"] = -1  # once connected, reconnect for ever
    return nc
