"""Request/reply plumbing: where replies come back, and where they may go.

Each bus has one reply channel, created on its first request and removed when it
closes. A broker with a native mechanism (:class:`herald.capabilities.ReplyCapable`)
provides the transport; any other uses :class:`QueueReplyTransport`, one transient
queue ``herald.reply.<32 hex digits>`` per bus. A reply address arrives in a request
header and is input: :func:`accepts_reply_address` admits only addresses of those
two kinds, so a forged request cannot make a service publish its reply as an event.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TypeGuard

from .broker import Broker, Prefetch, Subscription
from .capabilities import CoreRequestTransport, ReplyCapable, ReplyTransport
from .errors import BrokerError, HeaderError, TimeoutError
from .headers import CORRELATION_ID, DEADLINE, REPLY_TO
from .message import Message

__all__ = ["QueueReplyTransport", "ReplyChannel", "accepts_reply_address", "send_reply"]

log = logging.getLogger("herald.rpc")
_QUEUE_ADDRESS = re.compile(r"herald\.reply\.[0-9a-f]{32}")


def accepts_reply_address(broker: Broker, address: str) -> bool:
    """Whether a request's ``herald-reply-to`` is a reply address ``broker`` can serve.

    >>> from herald.brokers.memory import MemoryBroker
    >>> broker = MemoryBroker("replies-doctest")
    >>> accepts_reply_address(broker, "herald.reply." + "0" * 32)
    True
    >>> accepts_reply_address(broker, "employee.deleted")
    False
    """
    if _QUEUE_ADDRESS.fullmatch(address):
        return True
    return _reply_capable(broker) and broker.is_reply_address(address)


@functools.cache
def _capable(kind: type[Broker]) -> bool:
    return issubclass(kind, ReplyCapable)


def _reply_capable(broker: Broker) -> TypeGuard[ReplyCapable]:
    """``isinstance(broker, ReplyCapable)``, checked once per type (a protocol check
    costs tens of microseconds, on every request served)."""
    return _capable(type(broker))


async def send_reply(broker: Broker, address: str, reply: Message) -> None:
    """Deliver ``reply`` to ``address``; raises :class:`herald.HeaderError` for an
    address that is not a reply address."""
    if _QUEUE_ADDRESS.fullmatch(address):
        await broker.publish((replace(reply, type=address),))
    elif _reply_capable(broker) and broker.is_reply_address(address):
        await broker.send_reply(address, reply)
    else:
        raise HeaderError(f"header {REPLY_TO}: {address[:100]!r} is not a reply address")


class QueueReplyTransport(ReplyTransport):
    """Replies through one transient queue per bus; works on every broker."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        token = uuid.uuid4().hex
        self.address = f"herald.reply.{token}"
        self._subscription = Subscription(
            f"reply-{token[:12]}", "reply", (self.address,), durable=False
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self, on_reply: Callable[[Message], None]) -> None:
        if self._task is None:
            await self._broker.declare(self._subscription)
            self._task = asyncio.create_task(self._receive(on_reply), name=f"herald:{self.address}")

    async def send(self, request: Message) -> None:
        await self._broker.publish((request,))

    async def _receive(self, on_reply: Callable[[Message], None]) -> None:
        while True:
            stream = self._broker.consume(self._subscription, Prefetch(256))
            try:
                async for delivery in stream:
                    on_reply(delivery.message)
                    await delivery.ack()
            except BrokerError as exc:
                log.warning("reply queue %s: %s; subscribing again", self.address, exc)
                await asyncio.sleep(0.5)
                with contextlib.suppress(BrokerError):
                    await self._broker.declare(self._subscription)
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


class ReplyChannel:
    """A bus's calls in flight, paired with their replies by correlation id."""

    def __init__(self, broker: Broker) -> None:
        self.transport = (
            broker.reply_transport()
            if isinstance(broker, ReplyCapable)
            else QueueReplyTransport(broker)
        )
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._started = False
        self._ready = asyncio.Lock()

    async def call(
        self,
        message: Message,
        timeout: float,
        send: Callable[[Sequence[Message]], Awaitable[None]] | None = None,
    ) -> Message:
        """Send the request ``message`` and return its reply. ``send`` publishes the
        request with its reply headers (through a publish pipeline that ends in
        :meth:`send_requests`); by default it goes straight to the transport."""
        correlation = message.id
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = future
        try:
            async with asyncio.timeout(timeout):
                if not self._started:
                    await self.start()
                headers = {
                    REPLY_TO: self.transport.address,
                    CORRELATION_ID: correlation,
                    DEADLINE: f"{time.time() + timeout:.3f}",
                }
                await (send or self.send_requests)((message.with_headers(headers),))
                return await future
        except builtins.TimeoutError as exc:
            raise TimeoutError(
                f"no reply to {message.type} within {timeout:g}s "
                "(is a service handling it running?)"
            ) from exc
        finally:
            self._pending.pop(correlation, None)

    async def send_requests(self, requests: Sequence[Message]) -> None:
        """Hand requests to the reply transport (the end of a request's publish)."""
        for request in requests:
            await self.transport.send(request)

    async def send_core_requests(self, requests: Sequence[Message]) -> None:
        """Send requests without storing them where the transport can (core NATS);
        durably like :meth:`send_requests` elsewhere."""
        transport = self.transport
        if not isinstance(transport, CoreRequestTransport):
            await self.send_requests(requests)
            return
        for request in requests:
            await transport.send_core(request)

    async def start(self) -> None:
        """Begin receiving replies (the first call does it otherwise). Idempotent."""
        async with self._ready:
            if not self._started:
                await self.transport.start(self._on_reply)
                self._started = True

    def _on_reply(self, reply: Message) -> None:
        future = self._pending.get(reply.headers.get(CORRELATION_ID, ""))
        if future is not None and not future.done():
            future.set_result(reply)

    async def close(self) -> None:
        await self.transport.close()
