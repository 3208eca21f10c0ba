"""Non-durable RPC requests on core NATS (``bus.request(..., durable=False)``).

A durable request is stored by JetStream for the serving queue like any event: it
waits out a responder's restart. A core request is published on the plain subject
``<ns.>requests.<request type>``; every consumer of an RPC queue also subscribes to
that subject in the queue group ``<ns.>requests.<queue>``, so each request reaches
one process of the service and nothing is stored. It is faster (no stream write, no
consumer ack) but lost when no responder is up, and then it fails fast: the request
carries the reply subject ``<inbox>.<correlation id>``, on which the server answers
"no responders" (status 503) when nobody subscribes, and the caller raises
:class:`herald.NoResponders` at once instead of waiting for the timeout. Replies
travel as for durable requests, to the caller's inbox named in ``herald-reply-to``.

A core delivery is settled locally: ack, retry, release and dead-letter have nothing
to tell the server (RPC requests are never retried; the caller gets the error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping

from nats.aio.client import Client
from nats.aio.msg import Msg

from ...broker import Delivery, Subscription
from ...deadletter import DeadLetterReason
from ...errors import HeraldError, MessageError, PublishError
from ...message import new_message_id
from ...wire import is_event_type
from .errors import TABLE
from .topology import Names, safe_token
from .wire import from_headers, undecodable

__all__ = ["CoreDelivery", "is_request_queue", "queue_group", "request_subject", "with_core"]

log = logging.getLogger("herald.brokers.nats")
NO_RESPONDERS = "503"


def request_subject(names: Names, request_type: str) -> str:
    """The core subject requests of ``request_type`` (``rpc.<event type>``) travel on.

    >>> request_subject(Names("ns"), "rpc.math.square")
    'ns.requests.rpc.math.square'
    """
    if not is_event_type(request_type):
        raise PublishError(f"{request_type[:100]!r} is not a request type")
    return f"{names.prefix}requests.{request_type}"


def queue_group(names: Names, queue: str) -> str:
    """The queue group of an RPC queue's responders (one of them gets each request)."""
    return f"{names.prefix}requests.{safe_token(queue)}"


def is_request_queue(subscription: Subscription) -> bool:
    """Whether ``subscription`` is an RPC queue (every pattern an exact ``rpc.`` type)."""
    return subscription.durable and all(
        p.startswith("rpc.") and is_event_type(p) for p in subscription.patterns
    )


class CoreDelivery(Delivery):
    """A request that came over core NATS: nothing to settle on the server."""

    __slots__ = ()

    async def _ack(self) -> None:
        pass

    async def _retry(self, delay: float, headers: Mapping[str, str]) -> None:
        log.info("core request %s not retried (core requests are never stored)", self.message.id)

    async def _release(self) -> None:
        log.info("core request %s given up on shutdown; the caller times out", self.message.id)

    async def _dead_letter(self, reason: DeadLetterReason) -> None:
        log.warning(
            "core request %s not handled (%s: %s); core requests are not dead-lettered",
            self.message.id,
            reason.error_type,
            reason.error_message,
        )


def _delivery(msg: Msg, subscription: Subscription) -> CoreDelivery:
    request_type = msg.subject.partition("requests.")[2]
    try:
        message = from_headers(msg.headers, msg.data, request_type, new_message_id())
    except MessageError as exc:
        bare = undecodable(msg.headers, msg.data, request_type, new_message_id())
        return CoreDelivery(bare, subscription, 1, error=exc)
    return CoreDelivery(message, subscription, 1)


async def with_core(
    nc: Client,
    names: Names,
    subscription: Subscription,
    durable: AsyncGenerator[Delivery, None],
) -> AsyncGenerator[Delivery, None]:
    """The deliveries of ``durable`` and of the core request subjects of
    ``subscription``, as they come. A core request is handed over straight from the
    subscription's callback; the durable feed is pumped by a task that takes the next
    delivery only once what it handed over was taken (the feed's window holds)."""
    arrived: asyncio.Queue[Delivery | BaseException | None] = asyncio.Queue()

    async def received(msg: Msg) -> None:
        arrived.put_nowait(_delivery(msg, subscription))

    async def pump() -> None:
        try:
            async for delivery in durable:
                arrived.put_nowait(delivery)
                await arrived.join()
            arrived.put_nowait(None)
        except Exception as exc:  # the consumer's error reaches the worker
            arrived.put_nowait(exc)

    group = queue_group(names, subscription.queue)
    core = []
    pumping = asyncio.create_task(pump(), name=f"herald:durable:{subscription.queue}")
    try:
        with TABLE.converting(f"subscribing to the core requests of {subscription.queue}"):
            for pattern in subscription.patterns:
                subject = request_subject(names, pattern)
                core.append(await nc.subscribe(subject, group, cb=received))
        while True:
            item = await arrived.get()
            arrived.task_done()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        pumping.cancel()
        with contextlib.suppress(BaseException):
            await pumping
        for sub in core:
            with contextlib.suppress(HeraldError), TABLE.converting("leaving core requests"):
                await sub.unsubscribe()
        await durable.aclose()
