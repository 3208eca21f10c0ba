"""RPC replies through NATS inboxes, without JetStream.

A caller's bus subscribes (core NATS, no stream, no consumer) to one inbox subject
``_INBOX.<nuid>`` and puts it in its requests' ``herald-reply-to`` header; requests
themselves travel like any event, stored by JetStream for the serving queue. The
server answers with a plain core publish to that inbox (:func:`is_inbox` decides),
so a reply costs one message and nothing is left on the server when the bus closes.
Core NATS delivers at most once: a reply sent while the caller is disconnected is
lost and the call times out. nats-py subscribes again to the inbox after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NATSSubscription
from nats.errors import Error as NATSError

from ..broker import ReplyTransport
from ..errors import ConnectionLostError, DecodeError
from ..message import Message
from .nats_wire import from_headers

__all__ = ["INBOX_PREFIX", "InboxReplyTransport", "is_inbox"]

log = logging.getLogger("herald.brokers.nats")
INBOX_PREFIX = "_INBOX"
"""The inbox prefix the adapter connects with (nats-py's default)."""
FLUSH_TIMEOUT = 2


def is_inbox(address: str) -> bool:
    """Whether a ``herald-reply-to`` address is a NATS inbox (else a queue's topic).

    >>> is_inbox("_INBOX.abc"), is_inbox("herald.reply.abc"), is_inbox("_INBOX")
    (True, False, False)
    """
    return address.startswith(f"{INBOX_PREFIX}.") and len(address) > len(INBOX_PREFIX) + 1


class InboxReplyTransport(ReplyTransport):
    """One inbox subscription per bus; requests published through ``publish``."""

    def __init__(
        self,
        client: Callable[[], Client],
        publish: Callable[[Sequence[Message]], Awaitable[None]],
    ) -> None:
        self._client = client
        self._publish = publish
        self.address = ""
        self._subscription: NATSSubscription | None = None
        self._subscribed_on: Client | None = None
        self._on_reply: Callable[[Message], None] | None = None
        self._lock = asyncio.Lock()

    async def start(self, on_reply: Callable[[Message], None]) -> None:
        self._on_reply = on_reply
        await self._subscribe()

    async def send(self, request: Message) -> None:
        if self._subscribed_on is not self._client():
            await self._subscribe()  # the broker connected again with a new client
        await self._publish((request,))

    async def close(self) -> None:
        async with self._lock:
            subscription, self._subscription = self._subscription, None
            nc, self._subscribed_on = self._subscribed_on, None
            if subscription is None or nc is None or nc.is_closed:
                return
            with contextlib.suppress(NATSError, OSError, asyncio.TimeoutError):
                await subscription.unsubscribe()
                await nc.flush(FLUSH_TIMEOUT)  # the server has dropped the interest

    async def _subscribe(self) -> None:
        async with self._lock:
            nc = self._client()
            if self._subscribed_on is nc and self._subscription is not None:
                return
            if self._subscription is not None:
                with contextlib.suppress(NATSError, OSError, asyncio.TimeoutError):
                    await self._subscription.unsubscribe()
                self._subscription = None
            address = self.address or nc.new_inbox()
            try:
                self._subscription = await nc.subscribe(address, cb=self._receive)
            except (NATSError, OSError) as exc:
                raise ConnectionLostError(f"cannot subscribe to the reply inbox: {exc!r}") from exc
            self.address = address
            self._subscribed_on = nc

    async def _receive(self, msg: Msg) -> None:
        try:
            reply = from_headers(msg.headers, msg.data, "herald.reply")
        except DecodeError as exc:
            log.warning("undecodable reply on %s dropped: %s", msg.subject, exc)
            return
        if self._on_reply is not None:
            self._on_reply(reply)
