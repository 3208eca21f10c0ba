"""``nats://[user:pass@]host[:port][,host...]/?namespace=...`` — NATS JetStream.

Events are stored in one stream over ``<ns.>events.>`` (limits retention with a
``max_age`` by default, ``retention=interest`` on request). Each queue is a durable
pull consumer (``deliver_policy=new``, explicit acks) filtered on its one pattern, so
it gets everything published after its declare and keeps its place while its service
is offline. ``tls://`` connects with TLS. See ``docs/nats.md`` for the guarantees and
the differences from RabbitMQ; :mod:`.topology` for the names used on the server.
RPC replies travel on core NATS inboxes (:mod:`.replies`), not through JetStream;
so do requests sent with ``durable=False`` (:mod:`.core_requests`).
Exclusive queues are held through a key-value bucket (:mod:`.exclusive`); each
process reports its consumers and held messages there too (:mod:`.presence`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Self

from nats.aio.client import Client
from nats.js.client import JetStreamContext
from nats.js.errors import NoStreamResponseError

from ...broker import Broker, Delivery, Features, MiB, Prefetch, ProgressCallback, Subscription
from ...capabilities import QueueStats, ReplyTransport
from ...deadletter import DeadLetter
from ...errors import BrokerError, CapabilityError, HeraldError, PublishError
from ...message import Message
from . import replies
from .connection import open_connection
from .consumer import Parts, PullFeed, consume
from .core_requests import is_request_queue, with_core
from .deadletters import REASON_ROOM, DeadLetterStore
from .delivery import Leases
from .errors import TABLE, is_too_large
from .exclusive import Holders
from .inspection import inspect_queues
from .presence import Presence
from .publisher import Outgoing, Publisher
from .settings import NATSSettings
from .topology import Topology
from .wire import check_fits, to_headers

__all__ = ["HEADER_ROOM", "NATSBroker"]

HEADER_ROOM = 8 * 1024
"""Of the server's ``max_payload``, what a body leaves for headers: 6 KiB kept free
for a dead letter's reason (:data:`.deadletters.REASON_ROOM`) and 2 KiB for the
message's own (CloudEvents attributes, ids, application headers)."""
Prepared = tuple[str, Message, dict[str, str]]


@dataclass(frozen=True, slots=True)
class _Session:
    nc: Client
    js: JetStreamContext
    topology: Topology
    store: DeadLetterStore
    leases: Leases
    publisher: Publisher
    presence: Presence
    holders: Holders

    def parts(self, feeds: set[PullFeed]) -> Parts:
        return Parts(
            self.nc, self.topology, self.store, self.leases, self.presence, self.holders, feeds
        )

    async def close(self) -> None:
        """Give back what is held, let go of exclusive queues, stop writing presence."""
        await self.leases.give_back()
        await self.holders.close()
        await self.presence.close()
        await self.leases.close()


def outgoing(prepared: Sequence[Prepared]) -> list[Outgoing]:
    return [(subject, message.body, headers) for subject, message, headers in prepared]


class NATSBroker(Broker):
    """A bus on NATS JetStream (server 2.9 or later).

    Implements :class:`herald.DeadLetterAdmin`, :class:`herald.QueueInspection`,
    :class:`herald.ReplyCapable`, :class:`herald.capabilities.ConnectionStatus` and
    :class:`herald.RetainedHistory` (with ``retention=limits``, the default).
    """

    schemes = ("nats", "tls")
    features = Features(
        persistent=True,
        multi_process=True,
        retry_headers=False,
        counts_redelivery=True,
        release_counts_attempt=True,
        max_message_bytes=MiB - HEADER_ROOM,
    )

    def __init__(self, settings: NATSSettings) -> None:
        self.settings = settings
        self.names = settings.names
        if settings.max_age > 0:  # a scheduled message waits in the stream, naked
            self.features = replace(self.features, max_schedule_delay=settings.max_age)
        self._session: _Session | None = None
        self._feeds: set[PullFeed] = set()
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(NATSSettings.from_url(url))

    def __repr__(self) -> str:
        return f"NATSBroker({self.settings.shown_url!r})"

    @property
    def connected(self) -> bool:
        """Whether the connection is up now (:class:`herald.capabilities.ConnectionStatus`)."""
        session = self._session
        return session is not None and bool(session.nc.is_connected)

    async def connect(self) -> None:
        async with self._lock:
            if self._session is not None:
                if not self._session.nc.is_closed:
                    return
                await self._session.close()  # a connection nats-py gave up on
            nc = await open_connection(
                self.settings, self._on_reconnected, lambda: self._session is not None
            )
            js = nc.jetstream(timeout=self.settings.timeout)
            topology = Topology(js, self.settings)
            try:
                await topology.ensure_streams()
            except BaseException:
                with contextlib.suppress(Exception):
                    await nc.close()
                raise
            store = DeadLetterStore(js, topology, lambda: nc.max_payload, self.settings.timeout)
            publisher = Publisher(nc, self.settings.timeout)
            leases = Leases(nc)
            presence = Presence(topology.live, leases.counts)
            leases.on_change = presence.changed
            self._session = _Session(
                nc, js, topology, store, leases, publisher, presence, Holders()
            )
            self._on_reconnected()

    async def close(self) -> None:
        session, self._session = self._session, None
        feeds = list(self._feeds)
        for feed in feeds:
            feed.fail(BrokerError(f"{self.settings.shown_url} broker is closed"))
        if session is None:
            return
        for feed in feeds:
            # Withdraw the pull requests first: nats-server 2.9 handing a message given
            # back below to a request of this closing connection loses its attempt count.
            await feed.close()
        await session.close()
        if not session.nc.is_closed:
            with contextlib.suppress(HeraldError), TABLE.converting("closing"):
                await session.nc.close()

    async def destroy(self) -> None:
        await self._open().topology.destroy()

    async def _publish(self, messages: Sequence[Message]) -> None:
        session = self._open()
        limit = session.nc.max_payload - REASON_ROOM
        prepared: list[Prepared] = []
        for message in messages:
            headers = to_headers(message)
            check_fits(message, headers, limit)
            prepared.append((self.names.event_subject(message.type), message, headers))
        failed = await session.publisher.publish(outgoing(prepared))
        if failed and all(isinstance(exc, NoStreamResponseError) for exc in failed.values()):
            await session.topology.ensure_streams()  # someone deleted the streams
            order = sorted(failed)
            retried = await session.publisher.publish(outgoing([prepared[i] for i in order]))
            failed = {order[i]: exc for i, exc in retried.items()}
        if not failed:
            return
        index, exc = min(failed.items())
        if is_too_large(exc):
            _, message, headers = prepared[index]
            stream = self.names.streams.events
            raise await session.topology.too_large(stream, message, headers) from exc
        doing = f"publishing {len(messages)} message(s) ({len(failed)} not confirmed)"
        raise TABLE.convert(exc, doing, PublishError) from exc

    async def declare(self, subscription: Subscription) -> None:
        await self._open().topology.declare(subscription, None)

    async def backfill(self, subscription: Subscription, since: datetime | None = None) -> int:
        """Create the queue's consumer at the oldest retained event, or at ``since``
        (see :meth:`.topology.Topology.backfill`); needs ``retention=limits``."""
        if self.settings.retention != "limits":
            raise CapabilityError(
                f"NATS with retention={self.settings.retention} keeps no history to "
                f"backfill {subscription.queue} from (events go once every bound queue "
                "acked them): use retention=limits, the default, and its max_age"
            )
        return await self._open().topology.backfill(subscription, since)

    async def consume(
        self, subscription: Subscription, prefetch: Prefetch
    ) -> AsyncGenerator[Delivery, None]:
        session = self._open()
        stream = consume(session.parts(self._feeds), subscription, prefetch)
        if is_request_queue(subscription):
            stream = with_core(session.nc, self.names, subscription, stream)
        try:
            async for delivery in stream:
                yield delivery
        finally:
            await stream.aclose()

    # -- replies ----------------------------------------------------------------------

    def reply_transport(self) -> ReplyTransport:
        """Replies on a core NATS inbox of this bus (:mod:`.replies`)."""
        return replies.InboxReplyTransport(lambda: self._open().nc, self.publish, self.names)

    def is_reply_address(self, address: str) -> bool:
        return replies.is_reply_address(address)

    async def send_reply(self, address: str, reply: Message) -> None:
        await replies.send_reply(self._open().nc, address, reply)

    # -- dead letters and inspection --------------------------------------------------

    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        return [item.letter for item in await self._open().store.read(service, limit)]

    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        return await self._open().store.replay(service, ids, progress)

    async def replay_edited_dead_letter(self, service: str, id: str, message: Message) -> bool:
        return await self._open().store.replay(service, {id}, None, message) == 1

    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        return await self._open().store.purge(service, ids)

    async def inspect_queues(self, queues: Collection[str] | None = None) -> list[QueueStats]:
        session = self._open()
        return await inspect_queues(session.js, session.topology, queues)

    def _open(self) -> _Session:
        session = self._session
        if session is None or session.nc.is_closed:
            raise BrokerError(f"{self.settings.shown_url} broker is not connected")
        return session

    def _on_reconnected(self) -> None:
        session = self._session
        if session is not None:
            max_bytes = session.nc.max_payload - HEADER_ROOM
            self.features = replace(self.features, max_message_bytes=max_bytes)
        for feed in self._feeds:
            feed.reset()
