"""RPC replies through NATS inboxes, without JetStream.

A caller's bus subscribes (core NATS, no stream, no consumer) to one inbox subject
``_INBOX.<nuid>`` and puts it in its requests' ``herald-reply-to`` header; requests
themselves travel like any event, stored by JetStream for the serving queue. The
server answers with a plain core publish to that inbox, so a reply costs one message
and nothing is left on the server when the bus closes. Core NATS delivers at most
once: a reply sent while the caller is disconnected is lost and the call times out.
nats-py subscribes again to the inbox after a reconnect.

A reply address arrives in a request header, so it is input: :func:`is_reply_address`
accepts exactly the form this adapter creates, ``_INBOX.`` and one token of letters,
digits, ``_`` and ``-``. Nothing else is ever published to: not an event subject, not
a wildcard, not a subject with blanks or control characters (which would end the
protocol line), and not a deeper inbox (nats-py's request and pull-consumer muxes
live at ``_INBOX.<nuid>.<token>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NATSSubscription

from ...capabilities import CoreRequestTransport
from ...errors import HeaderError, HeraldError, PublishError
from ...headers import CORRELATION_ID, REPLY_STATUS, REPLY_TO
from ...message import Message
from .core_requests import NO_RESPONDERS, request_subject
from .errors import TABLE
from .topology import Names
from .wire import check_fits, from_headers, to_headers

__all__ = ["INBOX_PREFIX", "InboxReplyTransport", "is_reply_address", "send_reply"]

log = logging.getLogger("herald.brokers.nats")
INBOX_PREFIX = "_INBOX"
"""The inbox prefix the adapter connects with (nats-py's default)."""
_ADDRESS = re.compile(rf"{INBOX_PREFIX}\.[A-Za-z0-9_-]{{1,64}}")
FLUSH_TIMEOUT = 2
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_TOKENS = 1024


def is_reply_address(address: str) -> bool:
    """Whether ``address`` is an inbox of the form this adapter replies to.

    >>> is_reply_address("_INBOX.u38RuAEP6CN1bqFGkLAhQd")
    True
    >>> [is_reply_address(a) for a in ("_INBOX.>", "_INBOX.a b", "_INBOX.a\\r\\nPUB x 1",
    ...                                "employee.deleted", "_INBOX.a.b", "_INBOX.")]
    [False, False, False, False, False, False]
    """
    return _ADDRESS.fullmatch(address) is not None


class InboxReplyTransport(CoreRequestTransport):
    """One inbox subscription per bus; requests published through ``publish``, or on
    core NATS by :meth:`send_core` (see :mod:`.core_requests`)."""

    def __init__(
        self,
        client: Callable[[], Client],
        publish: Callable[[Sequence[Message]], Awaitable[None]],
        names: Names | None = None,
    ) -> None:
        self._client = client
        self._publish = publish
        self._names = names or Names()
        self.address = ""
        self._subscription: NATSSubscription | None = None
        self._statuses: NATSSubscription | None = None
        self._tokens: dict[str, str] = {}
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

    async def send_core(self, request: Message) -> None:
        """Publish ``request`` on core NATS to one responder of its service's queue
        group; a "no responders" answer of the server comes back as an error reply."""
        nc = self._client()
        if self._subscribed_on is not nc:
            await self._subscribe()
        correlation = request.headers.get(CORRELATION_ID, request.id)
        token = correlation
        if not _TOKEN.fullmatch(correlation):
            token = hashlib.sha256(correlation.encode()).hexdigest()[:32]
            self._tokens[token] = correlation
            while len(self._tokens) > _MAX_TOKENS:
                del self._tokens[next(iter(self._tokens))]
        headers = to_headers(request, dedup=False)
        check_fits(request, headers, nc.max_payload)
        subject = request_subject(self._names, request.type)
        with TABLE.converting(f"sending request {request.id}", as_=PublishError):
            await nc.publish(subject, request.body, f"{self.address}.{token}", headers)

    async def close(self) -> None:
        async with self._lock:
            subscription, self._subscription = self._subscription, None
            statuses, self._statuses = self._statuses, None
            nc, self._subscribed_on = self._subscribed_on, None
            if subscription is None or nc is None or nc.is_closed:
                return
            with contextlib.suppress(HeraldError), TABLE.converting("closing the reply inbox"):
                await subscription.unsubscribe()
                if statuses is not None:
                    await statuses.unsubscribe()
                await nc.flush(FLUSH_TIMEOUT)  # the server has dropped the interest

    async def _subscribe(self) -> None:
        async with self._lock:
            nc = self._client()
            if self._subscribed_on is nc and self._subscription is not None:
                return
            for old in (self._subscription, self._statuses):
                if old is not None:
                    with contextlib.suppress(HeraldError), TABLE.converting("leaving old inbox"):
                        await old.unsubscribe()
            self._subscription = self._statuses = None
            address = self.address or nc.new_inbox()
            with TABLE.converting("subscribing to the reply inbox"):
                self._subscription = await nc.subscribe(address, cb=self._receive)
                self._statuses = await nc.subscribe(f"{address}.*", cb=self._status)
                await nc.flush(FLUSH_TIMEOUT)  # the server knows the inbox when start() returns
            self.address = address
            self._subscribed_on = nc

    async def _receive(self, msg: Msg) -> None:
        try:
            reply = from_headers(msg.headers, msg.data, "herald.reply", "")
        except HeraldError as exc:
            log.warning("undecodable reply on %s dropped: %s", msg.subject, exc)
            return
        if self._on_reply is not None:
            self._on_reply(reply)

    async def _status(self, msg: Msg) -> None:
        """The server's answer to a core request nobody subscribes to."""
        if (msg.headers or {}).get("Status") != NO_RESPONDERS or self._on_reply is None:
            return
        token = msg.subject.rpartition(".")[2]
        correlation = self._tokens.pop(token, token)
        text = "no responders: no service is subscribed to this core (durable=False) request"
        body = json.dumps({"type": "NoResponders", "message": text, "expected": True})
        headers = {CORRELATION_ID: correlation, REPLY_STATUS: "error"}
        self._on_reply(Message(type="herald.reply", body=body.encode(), headers=headers))


async def send_reply(nc: Client, address: str, reply: Message) -> None:
    """Publish ``reply`` to ``address`` once :func:`is_reply_address` accepted it."""
    if not is_reply_address(address):
        raise HeaderError(f"header {REPLY_TO}: {address[:100]!r} is not a NATS reply inbox")
    headers = to_headers(reply, dedup=False)
    check_fits(reply, headers, nc.max_payload)
    with TABLE.converting(f"sending reply {reply.id}", as_=PublishError):
        await nc.publish(address, reply.body, headers=headers)
