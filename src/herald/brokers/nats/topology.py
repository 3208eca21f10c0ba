"""Names on a NATS JetStream server, and the streams and consumers behind them.

Herald's wire conventions become these names (``ns`` is the ``namespace=`` option)::

    <ns.>events.<event type>     published events, stream <ns>_EVENTS (or EVENTS)
    <ns.>replay.<consumer>       dead letters replayed to one queue, stream <events>_REPLAY
    <ns.>dlq.<service>           dead letters of a service, stream <events>_DLQ
    key-value buckets            <events>_LIVE and <events>_HOLDS (:mod:`.state`)

(``stream=NAME`` renames the events stream; the others follow it.)

A queue ``payroll.employee.created`` is the durable consumer
``payroll_employee_created`` on both the events and the replay stream; its
description, ``herald queue payroll.employee.created`` (``herald exclusive queue
...`` once it was declared exclusive), names the queue. Every name is built from
Herald's own names (namespace, service, queue, event type), each reduced to
subject-safe tokens: nothing read from a message picks one.

>>> names = Names("t1")
>>> names.event_subject("employee.created"), names.streams.events
('t1.events.employee.created', 't1_EVENTS')
>>> names.filter_subject(("employee.#",))
't1.events.employee.>'
>>> consumer_name("payroll.employee.created")
'payroll_employee_created'
>>> queue_of("herald exclusive queue payroll.x"), queue_of("someone else's")
('payroll.x', None)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from ...broker import Subscription
from ...errors import ConfigurationError, HeraldError, MessageTooLargeError, PublishError
from ...message import Message
from ...topic import validate_pattern
from ...wire import is_event_type
from .errors import TABLE
from .state import LIVE_TTL, Bucket, open_bucket
from .wire import header_bytes

__all__ = [
    "BucketNames",
    "Names",
    "StreamNames",
    "Topology",
    "TopologySettings",
    "consumer_name",
    "queue_of",
    "safe_token",
]

log = logging.getLogger("herald.brokers.nats")

_SAFE = re.compile(r"[^A-Za-z0-9-]")
_LOSSLESS = re.compile(r"^[A-Za-z0-9.-]+$")
_STREAM = re.compile(r"^[A-Za-z0-9_-]+$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
QUEUE_DESCRIPTION = "herald queue "
EXCLUSIVE_DESCRIPTION = "herald exclusive queue "
TRANSIENT_IDLE = 300.0
"""Seconds after which JetStream removes an idle transient queue's consumers."""
LIST_PAGE = 256


def safe_token(text: str) -> str:
    """``text`` as one subject token / stream or consumer name: dots and anything but
    letters, digits and ``-`` become ``_``; a short hash keeps lossy names unique.

    >>> safe_token("a.b-c"), safe_token("a_b") == safe_token("a.b")
    ('a_b-c', False)
    """
    if _LOSSLESS.match(text):
        return text.replace(".", "_")
    safe = _SAFE.sub("_", text)
    digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{safe}_{digest}"


def consumer_name(queue: str) -> str:
    """The durable consumer of a queue (no dots, unique per queue name)."""
    return safe_token(queue)


def description_of(queue: str, exclusive: bool) -> str:
    return (EXCLUSIVE_DESCRIPTION if exclusive else QUEUE_DESCRIPTION) + queue


def queue_of(description: str | None) -> str | None:
    """The queue a consumer's description names, None if it is not Herald's."""
    for head in (QUEUE_DESCRIPTION, EXCLUSIVE_DESCRIPTION):
        if description and description.startswith(head):
            return description.removeprefix(head)
    return None


@dataclass(frozen=True, slots=True)
class StreamNames:
    events: str
    replay: str
    dlq: str

    def all(self) -> tuple[str, str, str]:
        return self.events, self.replay, self.dlq


@dataclass(frozen=True, slots=True)
class BucketNames:
    live: str
    holds: str

    def streams(self) -> tuple[str, str]:
        """The streams JetStream keeps the buckets in."""
        return f"KV_{self.live}", f"KV_{self.holds}"


class Names:
    """Every name a broker with namespace ``namespace`` uses on the server."""

    __slots__ = ("buckets", "namespace", "prefix", "streams")

    def __init__(self, namespace: str = "", stream: str | None = None) -> None:
        if namespace and not _NAMESPACE.match(namespace):
            raise ConfigurationError(
                f"invalid NATS namespace {namespace!r}: use letters, digits, '_', '-' "
                "and dots between words"
            )
        if stream is not None and not _STREAM.match(stream):
            raise ConfigurationError(
                f"invalid JetStream stream name {stream!r}: use letters, digits, '_' and '-'"
            )
        self.namespace = namespace
        self.prefix = f"{namespace}." if namespace else ""
        base = stream or (f"{safe_token(namespace)}_EVENTS" if namespace else "EVENTS")
        self.streams = StreamNames(base, f"{base}_REPLAY", f"{base}_DLQ")
        self.buckets = BucketNames(f"{base}_LIVE", f"{base}_HOLDS")

    @property
    def events_wildcard(self) -> str:
        return f"{self.prefix}events.>"

    @property
    def replay_wildcard(self) -> str:
        return f"{self.prefix}replay.*"

    @property
    def dlq_wildcard(self) -> str:
        return f"{self.prefix}dlq.*"

    def event_subject(self, event_type: str) -> str:
        """The subject of an event type; anything but a plain event type is refused."""
        if not is_event_type(event_type):
            raise PublishError(
                f"{event_type[:100]!r} is not an event type: words of letters, digits, "
                "'_' and '-' separated by dots, no wildcards"
            )
        return f"{self.prefix}events.{event_type}"

    def replay_subject(self, queue: str) -> str:
        return f"{self.prefix}replay.{consumer_name(queue)}"

    def dlq_subject(self, service: str) -> str:
        return f"{self.prefix}dlq.{safe_token(service)}"

    def event_type(self, subject: str) -> str | None:
        """The event type a subject on the events stream carries, else None."""
        head = f"{self.prefix}events."
        return subject[len(head) :] if subject.startswith(head) else None

    def filter_subject(self, patterns: Sequence[str]) -> str:
        """The consumer filter for a queue's topic patterns (NATS 2.9: exactly one)."""
        if len(patterns) != 1:
            raise ConfigurationError(
                f"nats:// binds a queue to exactly one pattern, got {list(patterns)}: "
                "NATS 2.9 consumers have a single filter subject; use one handler per pattern"
            )
        words = validate_pattern(patterns[0]).split(".")
        for index, word in enumerate(words):
            if word == "#" and index != len(words) - 1:
                raise ConfigurationError(
                    f"nats:// cannot bind pattern {patterns[0]!r}: '#' is only supported as "
                    "the last word (it becomes NATS's '>', which matches one or more words)"
                )
        if words[-1] == "#":
            words[-1] = ">"
        return f"{self.prefix}events.{'.'.join(words)}"


class TopologySettings(Protocol):
    """What :class:`Topology` reads of :class:`.settings.NATSSettings`."""

    @property
    def names(self) -> Names: ...
    @property
    def retention(self) -> str: ...
    @property
    def max_age(self) -> float: ...
    @property
    def dlq_retention(self) -> float: ...
    @property
    def ack_wait(self) -> float: ...
    @property
    def max_deliver(self) -> int: ...
    @property
    def replicas(self) -> int: ...


class Topology:
    """Creates and finds the streams and consumers of one namespace."""

    def __init__(self, js: JetStreamContext, settings: TopologySettings) -> None:
        self._js = js
        self._settings = settings
        self.names = settings.names
        self._buckets: dict[str, Bucket] = {}
        self._opening = asyncio.Lock()
        self._destroyed = False

    async def live(self) -> Bucket:
        """The bucket of what lasts only while its process does (:mod:`.state`)."""
        bucket = await self._bucket(self.names.buckets.live, LIVE_TTL)
        if not bucket.ttl or bucket.ttl < 1:
            raise ConfigurationError(
                f"key-value bucket {bucket.name} keeps its entries for "
                f"{bucket.ttl or 'ever'}: Herald needs them to expire (max_age of at "
                f"least 1 s, {LIVE_TTL:.0f} s when Herald creates it); recreate it"
            )
        return bucket

    async def holds(self) -> Bucket:
        """The bucket of how each exclusive queue was last left (:mod:`.state`)."""
        return await self._bucket(self.names.buckets.holds, None)

    async def _bucket(self, name: str, ttl: float | None) -> Bucket:
        async with self._opening:
            if name not in self._buckets:
                self._buckets[name] = await open_bucket(
                    self._js, name, ttl, lambda: not self._destroyed, self._settings.replicas
                )
            return self._buckets[name]

    async def ensure_streams(self) -> None:
        """Create the three streams if missing; keep the dead-letter stream's
        ``max_age`` at ``dlq_retention`` (the other streams are left as found)."""
        names, settings = self.names, self._settings
        retention = api.RetentionPolicy(settings.retention)
        wanted = (
            (names.streams.events, names.events_wildcard, retention, settings.max_age, False),
            (names.streams.replay, names.replay_wildcard, retention, settings.max_age, False),
            (names.streams.dlq, names.dlq_wildcard, api.RetentionPolicy.LIMITS,
             settings.dlq_retention, True),
        )  # fmt: skip
        for stream, subject, policy, age, enforce_age in wanted:
            with TABLE.converting(f"reading stream {stream}"):
                try:
                    info = await self._js.stream_info(stream)
                except NotFoundError:
                    info = None
            if info is None:
                config = api.StreamConfig(
                    name=stream,
                    subjects=[subject],
                    retention=policy,
                    max_age=age or None,
                    storage=api.StorageType.FILE,
                    num_replicas=settings.replicas,
                )
                with TABLE.converting(f"creating stream {stream}"):
                    await self._js.add_stream(config)
            elif enforce_age and abs((info.config.max_age or 0.0) - age) > 0.001:
                window = info.config.duplicate_window or 0.0
                config = replace(
                    info.config,
                    max_age=age or None,
                    duplicate_window=min(window, age) if age and window else window,
                )  # JetStream refuses a duplicate window longer than max_age
                with TABLE.converting(f"setting max_age of stream {stream}"):
                    await self._js.update_stream(config)

    async def backfill(self, subscription: Subscription, since: datetime | None) -> int:
        """Declare the queue; if its consumer on the events stream is new, it starts
        at the oldest retained event (or the first stored at or after ``since``)
        instead of the next one: history and live in the stream's one order. Return
        how many stored events the new consumer has pending (0 if it existed)."""
        name = consumer_name(subscription.queue)
        if await self.consumer_info(self.names.streams.events, name) is not None:
            await self.declare(subscription, None)
            return 0
        await self.declare(subscription, None, since or True)
        info = await self.consumer_info(self.names.streams.events, name)
        return 0 if info is None else info.num_pending or 0

    async def declare(
        self,
        subscription: Subscription,
        max_ack_pending: int | None,
        history: datetime | bool = False,
    ) -> list[float]:
        """Create (or check) the queue's two consumers; return the ``ack_wait`` each
        runs with, in seconds (an existing consumer keeps its own). ``history``: a new
        events consumer starts at the oldest retained event (``True``) or at a time."""
        name = consumer_name(subscription.queue)
        description = description_of(subscription.queue, subscription.exclusive)
        filters = (
            (self.names.streams.events, self.names.filter_subject(subscription.patterns)),
            (self.names.streams.replay, self.names.replay_subject(subscription.queue)),
        )
        ack_waits = []
        for stream, subject in filters:
            info = await self.consumer_info(stream, name)
            if info is None:
                policy, start = api.DeliverPolicy.NEW, None
                if history is not False and stream == self.names.streams.events:
                    policy = api.DeliverPolicy.ALL
                    if isinstance(history, datetime):
                        policy, start = api.DeliverPolicy.BY_START_TIME, history
                config = api.ConsumerConfig(
                    name=name,
                    durable_name=name,
                    description=description,
                    filter_subject=subject,
                    deliver_policy=policy,
                    opt_start_time=start,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    ack_wait=self._settings.ack_wait,
                    max_deliver=self._settings.max_deliver,
                    max_ack_pending=max_ack_pending or 1024,
                    inactive_threshold=None if subscription.durable else TRANSIENT_IDLE,
                    num_replicas=self._settings.replicas,
                )
                with TABLE.converting(f"creating consumer {name} on {stream}"):
                    info = await self._js.add_consumer(stream, config)
            else:
                if info.config.filter_subject != subject:
                    raise ConfigurationError(
                        f"queue {subscription.queue} is bound to {info.config.filter_subject} "
                        f"on NATS, not {subject}: a JetStream 2.9 consumer has one filter that "
                        "cannot be merged; purge the queue (herald destroy) to rebind it"
                    )
                self._check_exclusive(subscription, info.config.description, stream)
                pending = info.config.max_ack_pending
                if max_ack_pending and pending is not None and 0 <= pending < max_ack_pending:
                    pending = max_ack_pending  # raised, never lowered (-1: unlimited)
                if (info.config.description, info.config.max_ack_pending) != (description, pending):
                    config = replace(info.config, description=description, max_ack_pending=pending)
                    with TABLE.converting(f"updating consumer {name} on {stream}"):
                        info = await self._js.add_consumer(stream, config)
            ack_waits.append(info.config.ack_wait or self._settings.ack_wait)
        return ack_waits

    async def too_large(
        self, stream: str, message: Message, headers: Mapping[str, str]
    ) -> MessageTooLargeError:
        """The error for a message ``stream`` refused for its size (its ``max_msg_size``)."""
        limit = 0
        with contextlib.suppress(HeraldError), TABLE.converting(f"reading stream {stream}"):
            limit = (await self._js.stream_info(stream)).config.max_msg_size or 0
        return MessageTooLargeError(
            message.id,
            len(message.body),
            max(limit - header_bytes(headers), 0),
            f"stream {stream} (max_msg_size {limit:,} with headers)",
        )

    async def consumer_info(self, stream: str, name: str) -> api.ConsumerInfo | None:
        with TABLE.converting(f"reading consumer {name} on {stream}"):
            try:
                info: api.ConsumerInfo = await self._js.consumer_info(stream, name)
            except NotFoundError:
                return None
        return info

    async def queues(self) -> dict[str, str]:
        """Every queue of this namespace: queue name -> consumer name."""
        found: dict[str, str] = {}
        offset = 0
        while True:
            with TABLE.converting(f"listing the consumers of {self.names.streams.events}"):
                page = await self._js.consumers_info(self.names.streams.events, offset)
            for info in page:
                queue = queue_of(info.config.description)
                if queue is not None:
                    found[queue] = info.name
            if len(page) < LIST_PAGE:
                return found
            offset += len(page)

    async def delete_consumers(self, name: str) -> None:
        for stream in (self.names.streams.events, self.names.streams.replay):
            doing = f"deleting consumer {name} on {stream}"
            with TABLE.converting(doing), contextlib.suppress(NotFoundError):
                await self._js.delete_consumer(stream, name)

    async def destroy(self) -> None:
        """Delete the namespace's streams and buckets; this broker creates no bucket
        afterwards (what still reports or holds fails instead)."""
        self._destroyed = True
        self._buckets.clear()
        for stream in (*self.names.streams.all(), *self.names.buckets.streams()):
            with TABLE.converting(f"deleting stream {stream}"), contextlib.suppress(NotFoundError):
                await self._js.delete_stream(stream)

    def _check_exclusive(
        self, subscription: Subscription, description: str | None, stream: str
    ) -> None:
        """Refuse to consume an exclusive queue non-exclusively; note the first time
        an existing queue is declared exclusive."""
        was = description == description_of(subscription.queue, exclusive=True)
        if was and not subscription.exclusive:
            name = consumer_name(subscription.queue)
            raise ConfigurationError(
                f"queue {subscription.queue} is exclusive on NATS (declared exclusive=True "
                "before): consuming it non-exclusively would break its order per key. "
                "Declare it exclusive, or delete it to start over (loses what waits): "
                f"nats consumer rm {self.names.streams.events} {name}; "
                f"nats consumer rm {self.names.streams.replay} {name}"
            )
        if subscription.exclusive and not was and stream == self.names.streams.events:
            log.warning(
                "queue %s existed without exclusive=True; it is exclusive from now on. "
                "Processes already consuming it non-exclusively keep doing so until they "
                "restart",
                subscription.queue,
            )
