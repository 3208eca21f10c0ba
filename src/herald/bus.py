"""The bus: a connected broker plus the codecs, publishing and serving services.

>>> import asyncio, herald
>>> class Pinged(herald.Event, type="demo.pinged"):
...     n: int
>>> svc = herald.Service("doc")
>>> seen = []
>>> @svc.on(Pinged)
... async def record(event: Pinged, ctx: herald.Context) -> None:
...     seen.append(event.n)
>>> async def main() -> None:
...     async with herald.connect("memory://bus-doctest") as bus:
...         worker = await bus.start(svc)
...         await bus.publish(Pinged(n=1), key="a")
...         while not seen:
...             await asyncio.sleep(0.01)
...         await worker.stop()
>>> asyncio.run(main()); seen
[1]
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TypeVar

import pydantic

from .broker import Broker, ProgressCallback
from .brokers import broker_from_url
from .capabilities import DeadLetterAdmin, QueueInspection, QueueStats
from .codec import CodecRegistry, default_codecs
from .deadletter import DeadLetter
from .errors import (
    CapabilityError,
    ConfigurationError,
    DecodeError,
    MessageTooLargeError,
)
from .event import Event
from .message import Message
from .middleware import Middleware, PublishNext, publish_chain, request_chain
from .replies import ReplyChannel, accepts_reply_address, send_reply
from .rpc import NotFound, decode_reply, request_type
from .schedule import due_headers
from .scheduler import Scheduler
from .service import Service
from .signals import stop_on_signals
from .url import redact_url, resolve_url
from .worker import Worker

R = TypeVar("R", bound=pydantic.BaseModel)

__all__ = ["Bus", "connect"]

log = logging.getLogger("herald.bus")


class Bus:
    """A connection to one broker. Use ``async with herald.connect(url) as bus``.

    ``middleware`` runs around every handler of every service this bus starts, and
    around every publish (see :mod:`herald.middleware`). ``scheduler=False``: the
    first service started does not start Herald's scheduler (:meth:`start_scheduler`),
    for processes that leave it to others.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        url: str = "",
        source: str = "herald",
        codecs: CodecRegistry | None = None,
        middleware: Sequence[Middleware] = (),
        scheduler: bool = True,
    ) -> None:
        for item in middleware:
            if not isinstance(item, Middleware):
                raise ConfigurationError(f"{item!r} is not a herald.Middleware")
        self.broker = broker
        self.url = redact_url(url)
        self.source = source
        self.codecs = codecs or default_codecs
        self.middleware = tuple(middleware)
        self._send: PublishNext = publish_chain(self.middleware, broker.publish)
        self._workers: list[Worker] = []
        self._replies: ReplyChannel | None = None
        self._requests = any(type(m).request is not Middleware.request for m in self.middleware)
        self._send_request: PublishNext | None = None
        self._scheduler: Scheduler | None = None
        self._runs_scheduler = scheduler
        self._send_core: PublishNext | None = None

    def __repr__(self) -> str:
        return f"Bus({self.url!r})"

    async def __aenter__(self) -> Bus:
        await self.broker.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop any workers still running, remove the reply channel, close the broker."""
        workers, self._workers = self._workers, []
        for worker in workers:
            await worker.stop()
        if self._scheduler is not None:
            await self._scheduler.stop()
            self._scheduler = None
        if self._replies is not None:
            await self._replies.close()
            self._replies = None
        await self.broker.close()

    # -- publishing -------------------------------------------------------------

    def message(
        self,
        event: Event | Message,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """The envelope ``publish`` would send for ``event``."""
        return self.codecs.envelope(event, source=self.source, key=key, headers=headers)

    async def send(self, messages: Sequence[Message]) -> None:
        """Publish ready envelopes as one batch, through the publish middleware."""
        await self._send(messages)

    async def publish(
        self,
        event: Event | Message,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        at: datetime | None = None,
        delay: timedelta | float | None = None,
    ) -> Message:
        """Publish one event durably; returns once the broker confirmed it.

        ``key`` is the ordering key (CloudEvents ``subject``): events with the same key
        are handled in publish order by each subscribing service. ``at`` (a time-zone
        aware datetime) or ``delay`` (a timedelta or seconds) schedules the event: it
        is stored now and delivered to every subscribing service at that time, not
        before (a time past delivers at once). See docs/scheduling.md.
        """
        message = self.message(event, key=key, headers=due_headers(headers, at, delay))
        await self._send((message,))
        return message

    async def publish_many(
        self,
        events: Iterable[Event | Message | tuple[Event | Message, str | None]],
        *,
        at: datetime | None = None,
        delay: timedelta | float | None = None,
    ) -> list[Message]:
        """Publish several events as one batch (``(event, key)`` pairs give keys);
        ``at``/``delay`` schedule them all, as for :meth:`publish`."""
        headers = due_headers(None, at, delay)
        messages: list[Message] = []
        for item in events:
            if isinstance(item, tuple):
                messages.append(self.message(item[0], key=item[1], headers=headers))
            else:
                messages.append(self.message(item, headers=headers))
        await self._send(messages)
        return messages

    # -- serving ----------------------------------------------------------------

    async def start(self, service: Service, *, concurrency: int | None = None) -> Worker:
        """Start consuming for ``service`` in the background; stop with ``worker.stop()``."""
        if not service.handlers:
            raise ConfigurationError(f"service {service.name!r} has no handlers")
        worker = Worker(
            self.broker, self, service, concurrency=concurrency, middleware=self.middleware
        )
        await worker.start()
        self._workers.append(worker)
        if self._runs_scheduler and not self.broker.features.native_schedule:
            await self.start_scheduler()
        return worker

    async def start_scheduler(self) -> Scheduler:
        """Run Herald's scheduler (:mod:`herald.scheduler`) in this process until the
        bus closes: it publishes, at their due time, the scheduled messages of a
        broker without ``Features.native_schedule``. :meth:`start` runs it already;
        a process that runs no service may run it alone."""
        if self._scheduler is None:
            self._scheduler = Scheduler(self.broker)
        await self._scheduler.start()
        return self._scheduler

    async def serve(
        self,
        *services: Service,
        concurrency: int | None = None,
        shutdown_timeout: float = 30.0,
        handle_signals: bool = True,
    ) -> None:
        """Run ``services`` until cancelled or sent SIGINT/SIGTERM, then shut down
        gracefully: every worker drains at once (stops taking deliveries, reports
        ``"draining"`` to :class:`herald.health.Health`), running handlers get
        ``shutdown_timeout`` seconds to finish, and the rest is left for redelivery.
        A second signal exits at once (see :mod:`herald.signals`)."""
        if not services:
            raise ConfigurationError("serve() needs at least one service")
        workers = [await self.start(service, concurrency=concurrency) for service in services]
        try:
            if handle_signals:
                with stop_on_signals() as stop:
                    await self._until_stopped(workers, stop)
            else:
                await self._until_stopped(workers, asyncio.Event())
        finally:
            # All at once: every consumer stops taking deliveries (and readiness turns
            # false) right away, and the deadline holds for the whole process.
            stops = [worker.stop(shutdown_timeout) for worker in workers]
            await asyncio.shield(asyncio.gather(*stops))
            for worker in workers:
                if worker in self._workers:
                    self._workers.remove(worker)

    @staticmethod
    async def _until_stopped(workers: list[Worker], stop: asyncio.Event) -> None:
        waiters = [asyncio.create_task(w.wait()) for w in workers]
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([stopper, *waiters], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in (stopper, *waiters):
                task.cancel()

    @property
    def workers(self) -> tuple[Worker, ...]:
        """The workers this bus started and that were not stopped through it."""
        return tuple(self._workers)

    # -- request/reply ----------------------------------------------------------

    async def request(
        self,
        request: Event | Message,
        response: type[R],
        *,
        key: str | None = None,
        timeout: float = 10.0,
        durable: bool = True,
    ) -> R:
        """Send ``request`` to the service that handles it and return its reply as
        ``response``. Raises :class:`herald.TimeoutError` when no reply comes within
        ``timeout`` seconds, the handler's :class:`herald.ExpectedError` subclass, or
        :class:`herald.RemoteError` for any other failure of the handler. The request
        goes through the publish middleware like any publish.

        ``durable=True`` (the default) stores the request in the service's queue like
        an event, so it waits out a responder's restart or deploy. ``durable=False``
        sends it without storing it where the broker can: on NATS on core subjects,
        faster but lost when no responder is up, and then it raises
        :class:`herald.NoResponders` at once; on AMQP as a transient message (no disk
        write). Other brokers send it durably.
        """
        channel = self._reply_channel()
        send = self._send_request if durable else self._send_core
        message = self.message(request, key=key)
        message = replace(message, type=request_type(message.type))
        if not self._requests:
            result = decode_reply(await channel.call(message, timeout, send), response)
            assert result is not None
            return result
        decoded: list[tuple[Message, R]] = []

        async def call(message: Message) -> Message:
            reply = await channel.call(message, timeout, send)
            value = decode_reply(reply, response)  # an error reply raises inside the chain
            assert value is not None
            decoded.append((reply, value))
            return reply

        reply = await request_chain(self.middleware, call)(message)
        if decoded and decoded[-1][0] is reply:
            return decoded[-1][1]
        result = decode_reply(reply, response)  # a middleware answered with its own reply
        assert result is not None
        return result

    async def prepare_requests(self) -> None:
        """Open this bus's reply channel now instead of at its first request: a front
        end calls it before serving, so that its first request does not also wait for
        the broker to create the reply queue (on Kafka, a consumer group's join)."""
        await self._reply_channel().start()

    def _reply_channel(self) -> ReplyChannel:
        if self._replies is None:
            self._replies = ReplyChannel(self.broker)
            self._send_request = publish_chain(self.middleware, self._replies.send_requests)
            self._send_core = publish_chain(self.middleware, self._replies.send_core_requests)
        return self._replies

    def accepts_reply_address(self, address: str) -> bool:
        """Whether a request's reply address is one this bus's broker may answer."""
        return accepts_reply_address(self.broker, address)

    async def send_reply(self, address: str, reply: Message) -> None:
        """Deliver an RPC reply; a forged address raises :class:`herald.HeaderError`."""
        await send_reply(self.broker, address, reply)

    # -- capabilities -----------------------------------------------------------

    def _dead_letter_admin(self) -> DeadLetterAdmin:
        broker = self.broker
        if not isinstance(broker, DeadLetterAdmin):
            raise CapabilityError(f"{type(broker).__name__} has no dead-letter admin")
        return broker

    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        """The dead letters of ``service``, oldest first."""
        return await self._dead_letter_admin().dead_letters(service, limit)

    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Send dead letters back to their queues; returns how many."""
        return await self._dead_letter_admin().replay_dead_letters(service, ids, progress)

    async def replay_edited_dead_letter(
        self,
        service: str,
        id: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        event_class: type[Event] | None = None,
    ) -> Message:
        """Replay dead letter ``id`` of ``service`` with ``body`` (and ``headers``, in
        place of its own) to the queue it came from, as a first attempt; return what
        was sent. The body is input: it must fit the broker, have a codec for the
        message's content type, parse as JSON when that type is JSON, and decode into
        ``event_class`` when one is given (:class:`herald.DecodeError`,
        :class:`herald.ValidationError` or :class:`herald.MessageTooLargeError`
        otherwise, and the dead letter stays). :class:`herald.NotFound` when there is
        no such dead letter (or it was replayed or purged meanwhile).
        """
        admin = self._dead_letter_admin()
        letter = next((dl for dl in await admin.dead_letters(service) if dl.message.id == id), None)
        if letter is None:
            raise NotFound(f"no dead letter {id[:200]!r} of service {service!r}")
        message = letter.edited(body, headers)
        self._check_edited(message, event_class)
        if not await admin.replay_edited_dead_letter(service, id, message):
            raise NotFound(
                f"dead letter {id[:200]!r} of {service!r} was replayed or purged meanwhile"
            )
        return message

    def _check_edited(self, message: Message, event_class: type[Event] | None) -> None:
        limit = self.broker.features.max_message_bytes
        if len(message.body) > limit:
            raise MessageTooLargeError(message.id, len(message.body), limit, self.broker.schemes[0])
        content_type = message.datacontenttype
        codec = self.codecs.get(content_type)  # DecodeError naming the registered ones
        if event_class is not None:
            self.codecs.decode(message.body, content_type, event_class)
        elif codec.content_type == "application/json" or content_type.endswith("+json"):
            try:
                json.loads(message.body)
            except ValueError as exc:
                raise DecodeError(f"edited body is not valid JSON: {exc}") from exc

    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        """Delete dead letters; returns how many."""
        return await self._dead_letter_admin().purge_dead_letters(service, ids)

    async def inspect_queues(self, queues: Collection[str] | None = None) -> list[QueueStats]:
        """Depth, in flight, consumers and oldest message age of queues (all if None)."""
        broker = self.broker
        if not isinstance(broker, QueueInspection):
            raise CapabilityError(f"{type(broker).__name__} cannot inspect queues")
        return await broker.inspect_queues(queues)


def connect(
    url: str | None = None,
    *,
    source: str = "herald",
    codecs: CodecRegistry | None = None,
    middleware: Sequence[Middleware] = (),
    scheduler: bool = True,
) -> Bus:
    """A bus on the broker at ``url`` (else ``$HERALD_BROKER``, else the embedded
    ``sqlite:///./var/herald.db``). Connects when entered: ``async with connect() as bus``.
    ``middleware`` runs around every handler and publish of this bus;
    ``scheduler=False`` leaves Herald's scheduler to other processes (see :class:`Bus`).
    """
    resolved = resolve_url(url)
    return Bus(
        broker_from_url(resolved),
        url=resolved,
        source=source,
        codecs=codecs,
        middleware=middleware,
        scheduler=scheduler,
    )
