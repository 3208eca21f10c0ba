"""``nats://[user:pass@]host[:port][,host...]/?namespace=...`` — NATS JetStream.

Events are stored in one stream over ``<ns.>events.>`` (limits retention with a
``max_age`` by default, ``retention=interest`` on request). Each queue is a durable
pull consumer (``deliver_policy=new``, explicit acks) filtered on its one pattern, so
it gets everything published after its declare and keeps its place while its service
is offline. ``tls://`` connects with TLS. See ``docs/nats.md`` for the guarantees and
the differences from RabbitMQ; :mod:`.nats_names` for the names used on the server.
RPC replies travel on core NATS inboxes (:mod:`.nats_replies`), not through JetStream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Collection, Sequence
from dataclasses import replace
from typing import TypeVar

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NATSError
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import NoStreamResponseError, NotFoundError

from ..broker import Broker, Delivery, Features, ProgressCallback, ReplyTransport, Subscription
from ..deadletter import DeadLetter, DeadLetterReason
from ..errors import BrokerError, ConfigurationError, ConnectionLostError, DecodeError, PublishError
from ..message import Message
from ..url import BrokerURL
from .nats_deadletters import DeadLetterStore
from .nats_delivery import Leases, NATSDelivery, settle_quietly
from .nats_names import consumer_name
from .nats_pull import PullFeed, PullSource
from .nats_replies import INBOX_PREFIX, InboxReplyTransport, is_inbox
from .nats_settings import NATSSettings
from .nats_wire import fallback_message, from_headers, to_headers

__all__ = ["NATSBroker"]

log = logging.getLogger("herald.brokers.nats")
HEADER_ROOM = 8 * 1024
"""Of the server's ``max_payload``, what is kept for headers (a dead letter's are largest)."""
REPLAY_BATCH = 16
CONNECT_ATTEMPTS = 3
"""Tries per server before ``connect()`` gives up (later reconnects never give up)."""
T = TypeVar("T")


class NATSBroker(Broker):
    """A bus on NATS JetStream (server 2.9 or later)."""

    scheme = "nats"
    features = Features(
        persistent=True,
        multi_process=True,
        restartable=True,
        retry_headers=False,
        counts_redelivery=True,
        max_message_bytes=1024 * 1024 - HEADER_ROOM,
    )

    def __init__(self, settings: NATSSettings) -> None:
        self.settings = settings
        self.names = settings.names
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._leases: Leases | None = None
        self._store: DeadLetterStore | None = None
        self._feeds: set[PullFeed] = set()
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: BrokerURL) -> NATSBroker:
        return cls(NATSSettings.from_url(url))

    def __repr__(self) -> str:
        return f"NATSBroker({self.settings.shown_url!r})"

    async def connect(self) -> None:
        async with self._lock:
            if self._nc is not None and not self._nc.is_closed:
                return
            try:
                nc = await nats.connect(
                    servers=self.settings.servers,
                    user=self.settings.user,
                    password=self.settings.password,
                    tls=self.settings.ssl_context(),
                    name="herald",
                    inbox_prefix=INBOX_PREFIX,
                    connect_timeout=int(max(self.settings.timeout, 1)),
                    reconnect_time_wait=0.5,
                    max_reconnect_attempts=CONNECT_ATTEMPTS,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
            except (TimeoutError, NATSError, OSError) as exc:
                raise ConnectionLostError(
                    f"cannot connect to {self.settings.shown_url}: {exc!r}"
                ) from exc
            nc.options["max_reconnect_attempts"] = -1  # once connected, reconnect forever
            self._nc = nc
            self._js = nc.jetstream(timeout=self.settings.timeout)
            self._leases = Leases(nc, self.settings.ack_wait)
            self._store = DeadLetterStore(self._js, self.names, self.settings.timeout)
            self.features = replace(self.features, max_message_bytes=nc.max_payload - HEADER_ROOM)
            await self._ensure_streams()

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        for feed in list(self._feeds):
            feed.fail(BrokerError(f"{self.settings.shown_url} broker is closed"))
        if self._leases is not None:
            await self._leases.close()
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(NATSError, OSError, asyncio.TimeoutError):
                await nc.close()

    async def destroy(self) -> None:
        js = self._require()
        for stream in self.names.streams.all():
            with contextlib.suppress(NotFoundError):
                await self._api(js.delete_stream(stream), f"delete stream {stream}")

    async def publish(self, messages: Sequence[Message]) -> None:
        js = self._require()
        nc = self._nc
        assert nc is not None
        failed = await self._publish_all(js, nc, messages)
        if failed and all(isinstance(exc, NoStreamResponseError) for exc in failed.values()):
            await self._ensure_streams()  # someone deleted the streams; publish those again
            failed = await self._publish_all(js, nc, [messages[i] for i in failed])
        if failed:
            first = next(iter(failed.values()))
            raise PublishError(
                f"JetStream did not confirm {len(failed)} of {len(messages)} message(s): {first!r}"
            ) from first

    async def _publish_all(
        self, js: JetStreamContext, nc: Client, messages: Sequence[Message]
    ) -> dict[int, BaseException]:
        pending: dict[asyncio.Future[api.PubAck], int] = {}
        failed: dict[int, BaseException] = {}
        limit = nc.max_payload
        for index, message in enumerate(messages):
            headers = to_headers(message)
            size = len(message.body)
            if size > HEADER_ROOM:  # only then can the headers tip it over max_payload
                size += sum(len(k) + len(v) + 4 for k, v in headers.items())
            if len(message.body) > self.features.max_message_bytes or size > limit:
                failed[index] = PublishError(
                    f"message {message.id} has a {len(message.body)}-byte body "
                    f"({size} bytes with headers); this server takes bodies up to "
                    f"{self.features.max_message_bytes} bytes (max_payload {limit} with headers)"
                )
                continue
            try:
                future = await js.publish_async(
                    self.names.event_subject(message.type), message.body, headers=headers
                )
            except (NATSError, OSError) as exc:
                failed[index] = exc
                continue
            pending[future] = index
        if pending:
            done, late = await asyncio.wait(pending, timeout=self.settings.timeout)
            for future in late:
                future.cancel()
                failed[pending[future]] = TimeoutError("no PubAck in time")
            for future in done:
                if not future.cancelled() and future.exception() is not None:
                    failed[pending[future]] = future.exception()  # type: ignore[assignment]
        return failed

    def reply_transport(self) -> ReplyTransport:
        """Replies on a core NATS inbox of this bus (:mod:`.nats_replies`)."""
        return InboxReplyTransport(self._client, self.publish)

    async def send_reply(self, reply_to: str, reply: Message) -> None:
        if not is_inbox(reply_to):
            await super().send_reply(reply_to, reply)
            return
        nc = self._client()
        if len(reply.body) > self.features.max_message_bytes:
            raise PublishError(
                f"reply {reply.id} has a {len(reply.body)}-byte body; this server takes "
                f"bodies up to {self.features.max_message_bytes} bytes"
            )
        try:
            await nc.publish(reply_to, reply.body, headers=to_headers(reply))
        except (NATSError, OSError) as exc:
            raise PublishError(f"cannot send the reply to {reply_to}: {exc!r}") from exc

    async def declare(self, subscription: Subscription) -> None:
        await self._declare(subscription, None)

    async def _declare(self, subscription: Subscription, prefetch: int | None) -> None:
        js = self._require()
        name = consumer_name_of(subscription)
        filters = (
            (self.names.streams.events, self.names.filter_subject(subscription.patterns)),
            (self.names.streams.replay, self.names.replay_subject(subscription.queue)),
        )
        for stream, subject in filters:
            try:
                info = await js.consumer_info(stream, name)
            except NotFoundError:
                info = None
            except (TimeoutError, NATSError) as exc:
                raise ConnectionLostError(f"cannot declare {subscription.queue}: {exc!r}") from exc
            if info is None:
                config = api.ConsumerConfig(
                    name=name,
                    durable_name=name,
                    filter_subject=subject,
                    deliver_policy=api.DeliverPolicy.NEW,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    ack_wait=self.settings.ack_wait,
                    max_deliver=self.settings.max_deliver,
                    max_ack_pending=prefetch or 1024,
                    inactive_threshold=None if subscription.durable else 300.0,
                )
                await self._api(js.add_consumer(stream, config), f"create consumer {name}")
                continue
            if info.config.filter_subject != subject:
                raise ConfigurationError(
                    f"queue {subscription.queue} is bound to {info.config.filter_subject} on "
                    f"NATS, not {subject}: a JetStream 2.9 consumer has one filter that "
                    "cannot be merged; purge the queue (herald destroy) to rebind it"
                )
            if prefetch and (info.config.max_ack_pending or 0) < prefetch:
                config = replace(info.config, max_ack_pending=prefetch)
                await self._api(js.add_consumer(stream, config), f"update consumer {name}")

    async def consume(
        self, subscription: Subscription, prefetch: int
    ) -> AsyncGenerator[Delivery, None]:
        await self._declare(subscription, prefetch)
        nc, leases, store = self._nc, self._leases, self._store
        assert nc is not None and leases is not None and store is not None
        name = consumer_name_of(subscription)
        sources = [
            PullSource(self.names.streams.events, name),
            PullSource(self.names.streams.replay, name, batch=min(prefetch, REPLAY_BATCH)),
        ]
        feed = PullFeed(nc, sources, prefetch, on_receive=leases.hold)
        await feed.start()
        self._feeds.add(feed)
        try:
            async for msg, counted in feed.messages():

                def done(msg: Msg = msg, counted: bool = counted) -> None:
                    leases.drop(msg)
                    feed.settled(counted)

                default_type = self.names.event_type(msg.subject)
                try:
                    message = from_headers(msg.headers, msg.data, default_type)
                except DecodeError as exc:
                    delivery = NATSDelivery(
                        nc, msg, fallback_message(msg.headers, msg.data, default_type),
                        subscription, done, store.store,
                    )  # fmt: skip
                    await delivery.dead_letter(
                        DeadLetterReason(subscription.queue, "DecodeError", str(exc), 1)
                    )
                    continue
                yield NATSDelivery(nc, msg, message, subscription, done, store.store)
        finally:
            self._feeds.discard(feed)
            left = await feed.close()
            for msg in left:
                leases.drop(msg)
            await settle_quietly(left, nc)
            if not subscription.durable:
                await self._delete_consumers(name)

    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        self._require()
        assert self._store is not None
        return [item.letter for item in await self._store.read(service, limit)]

    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        js = self._require()
        assert self._store is not None

        async def has_queue(consumer: str) -> bool:
            try:
                await js.consumer_info(self.names.streams.replay, consumer)
            except NotFoundError:
                return False
            return True

        return await self._store.replay(service, ids, progress, has_queue)

    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        self._require()
        assert self._store is not None
        return await self._store.purge(service, ids)

    async def _ensure_streams(self) -> None:
        js = self._require()
        names = self.names
        retention = api.RetentionPolicy(self.settings.retention)
        max_age = self.settings.max_age or None
        wanted = (
            (names.streams.events, names.events_wildcard, retention, max_age),
            (names.streams.replay, names.replay_wildcard, retention, max_age),
            (names.streams.dlq, names.dlq_wildcard, api.RetentionPolicy.LIMITS, None),
        )
        for stream, subject, policy, age in wanted:
            try:
                await js.stream_info(stream)
                continue
            except NotFoundError:
                pass
            except (TimeoutError, NATSError) as exc:
                raise ConnectionLostError(f"JetStream unavailable: {exc!r}") from exc
            config = api.StreamConfig(
                name=stream,
                subjects=[subject],
                retention=policy,
                max_age=age,
                storage=api.StorageType.FILE,
            )
            await self._api(js.add_stream(config), f"create stream {stream}")

    async def _delete_consumers(self, name: str) -> None:
        js = self._js
        if js is None or self._nc is None or not self._nc.is_connected:
            return
        for stream in (self.names.streams.events, self.names.streams.replay):
            with contextlib.suppress(NATSError, asyncio.TimeoutError):
                await js.delete_consumer(stream, name)

    async def _api(self, call: Awaitable[T], what: str) -> T:
        try:
            return await call
        except NotFoundError:
            raise
        except (TimeoutError, NATSError) as exc:
            raise BrokerError(f"NATS could not {what}: {exc!r}") from exc

    def _client(self) -> Client:
        nc = self._nc
        if nc is None or nc.is_closed:
            raise BrokerError(f"{self.settings.shown_url} broker is not connected")
        return nc

    def _require(self) -> JetStreamContext:
        if self._js is None or self._nc is None or self._nc.is_closed:
            raise BrokerError(f"{self.settings.shown_url} broker is not connected")
        return self._js

    async def _on_error(self, exc: Exception) -> None:
        log.warning("NATS %s: %s", self.settings.shown_url, exc)

    async def _on_disconnected(self) -> None:
        if self._nc is None:
            return  # closing
        log.warning("NATS %s: disconnected; reconnecting", self.settings.shown_url)

    async def _on_reconnected(self) -> None:
        log.info("NATS %s: reconnected", self.settings.shown_url)
        for feed in self._feeds:
            feed.reset()


def consumer_name_of(subscription: Subscription) -> str:
    return consumer_name(subscription.queue)
