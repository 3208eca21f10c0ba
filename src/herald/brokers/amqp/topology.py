"""The exchange, queues and bindings the ``amqp://`` broker declares, and remembers.

Every declaration is idempotent, so the whole set is declared again after each
reconnect (a broker restart may have lost a queue someone deleted meanwhile).

Delayed retries need no plugin: a retried message waits in a durable TTL queue
``<queue>.retry.<ms>ms`` whose expired messages dead-letter back to ``<queue>``
through the default exchange. A delay is rounded up to the next step of a ladder
(10 ms to 24 h, each step at most 1.5 times the one before), so a retry never comes
back early, at most half its delay late, and a queue has few such siblings. Delays
over 24 h wait 24 h (with a warning).

Exclusive subscriptions are declared with ``x-single-active-consumer``. RabbitMQ
cannot add or remove that argument on an existing queue (a declaration that differs
fails with ``PRECONDITION_FAILED``), so a subscription whose exclusivity differs
from its existing queue's raises :class:`herald.ConfigurationError` naming the
queue and what to do; it is never consumed otherwise than asked.

Dead letters are kept ``dlq_retention`` seconds: ``<service>.dlq`` is declared with
that ``x-message-ttl``. A dead-letter queue that already exists with other
arguments (declared before retention existed) cannot be changed by declaring it
(RabbitMQ answers ``PRECONDITION_FAILED`` and closes the channel): it is used as it
is, with a warning saying how to apply the retention.

With a namespace, every durable queue declared is also recorded as a message in
the registry queue ``<namespace>.herald-registry``; AMQP cannot list queues, and
``destroy()`` (test teardown, possibly from another process) needs them all. The
first registration of each broker object compacts the registry (takes every
record, publishes each name once, then acks what it took), so it holds about one
message per queue however often brokers start.

>>> delay_bucket(0.0), delay_bucket(0.001), delay_bucket(0.4), delay_bucket(0.6), delay_bucket(0.61)
(0, 10, 400, 600, 800)
>>> delay_bucket(7200), delay_bucket(10**6) == DELAY_BUCKETS_MS[-1] == 86_400_000
(7200000, True)
>>> is_reply_address("amq.rabbitmq.reply-to.g1h2AA1yZXBseUA5MjQ4ODg0AAAjdwAAAABrD2iV.HKfoRAaj+w==")
True
>>> [is_reply_address(a) for a in ("amq.rabbitmq.reply-to", "amq.rabbitmq.reply-to.a b",
...     "amq.rabbitmq.reply-tox", "payroll.employee.created", "amq.rabbitmq.reply-to.x\\n")]
[False, False, False, False, False]
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import re
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel
from pamqp import commands as spec

from ...broker import Subscription, dead_letter_queue
from ...errors import ConfigurationError
from .connection import Opener
from .settings import AMQPSettings

__all__ = [
    "DELAY_BUCKETS_MS",
    "DIRECT_REPLY_TO",
    "SAC",
    "Topology",
    "delay_bucket",
    "is_reply_address",
    "retry_queue_name",
]

log = logging.getLogger("herald.amqp")

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
_REPLY_ADDRESS = re.compile(r"amq\.rabbitmq\.reply-to\.[A-Za-z0-9+/=_-][A-Za-z0-9+/=_.-]{0,511}")
_STEPS = (1, 1.5, 2, 3, 4, 5, 6, 8)
_MINUTE = 60_000
DELAY_BUCKETS_MS: tuple[int, ...] = (
    *(int(step * 10**power) for power in (1, 2, 3) for step in _STEPS),
    *(1000 * s for s in (10, 15, 20, 30, 40, 50, 60, 90)),
    *(_MINUTE * m for m in (2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 60, 90)),
    *(60 * _MINUTE * h for h in (2, 3, 4, 6, 8, 12, 18, 24)),
)
"""The TTLs of the retry queues, in milliseconds: 10 ms to 24 h, each at most 1.5
times the one before."""
SAC = "x-single-active-consumer"


def is_reply_address(address: str) -> bool:
    """Whether ``address`` is a direct reply-to name as RabbitMQ hands them out:
    ``amq.rabbitmq.reply-to.`` and a token of base64 characters and dots."""
    return _REPLY_ADDRESS.fullmatch(address) is not None


def delay_bucket(delay: float) -> int:
    """The TTL in milliseconds of the smallest bucket not shorter than ``delay``
    (the largest for longer delays); 0 for no delay."""
    if delay <= 0:
        return 0
    index = bisect.bisect_left(DELAY_BUCKETS_MS, math.ceil(round(delay * 1000, 6)))
    return DELAY_BUCKETS_MS[min(index, len(DELAY_BUCKETS_MS) - 1)]


def retry_queue_name(queue: str, bucket_ms: int) -> str:
    return f"{queue}.retry.{bucket_ms}ms"


class Topology:
    """Declares names inside the namespace and keeps track of them for redeclare/destroy."""

    def __init__(self, settings: AMQPSettings) -> None:
        self.settings = settings
        self.bindings: dict[str, tuple[str, ...]] = {}
        """Durable subscription queue (server name) -> the patterns bound to it."""
        self.arguments: dict[str, dict[str, Any]] = {}
        """Durable subscription queue (server name) -> its arguments."""
        self.retries: dict[str, dict[str, Any]] = {}
        """Retry queue (server name) -> its arguments."""
        self.dead_letters: set[str] = set()
        """Dead-letter queues (server names) declared or found."""
        self._registered: set[str] = set()
        self._compacted = False

    @property
    def exchange(self) -> str:
        return self.settings.exchange

    @property
    def registry(self) -> str | None:
        return self.settings.name("herald-registry") if self.settings.namespace else None

    def queue_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "quorum"} if self.settings.queue_type == "quorum" else {}

    def dead_letter_arguments(self) -> dict[str, Any]:
        retention = self.settings.dlq_retention
        ttl = {"x-message-ttl": retention * 1000} if retention else {}
        return {**self.queue_arguments(), **ttl}

    def subscription_arguments(self, sub: Subscription) -> dict[str, Any]:
        """Exclusive subscriptions have a single active consumer. Quorum queues
        dead-letter to ``<service>.dlq``: RabbitMQ 4 drops a message redelivered more
        than 20 times (its default delivery limit) unless they do."""
        arguments: dict[str, Any] = {SAC: True} if sub.exclusive else {}
        if self.settings.queue_type != "quorum":
            return arguments
        return {
            **self.queue_arguments(),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.settings.name(sub.dead_letter_queue),
            **arguments,
        }

    async def register(self, channel: AbstractChannel, queue: str) -> None:
        """Record ``queue`` in the namespace's registry (once per broker object; the
        first time, compact the registry)."""
        registry = self.registry
        if registry is None or queue in self._registered:
            return
        if not self._compacted:
            await self._compact(channel, registry)
            self._compacted = True
        if queue not in self._registered:
            await self._record(channel, registry, queue)
            self._registered.add(queue)

    async def _compact(self, channel: AbstractChannel, registry: str) -> None:
        """Take every record, publish each name once, then ack what was taken: a
        crash in between duplicates records, never loses one; brokers compacting at
        the same time each take and give back their own share."""
        await channel.queue_declare(registry, durable=True)
        names: dict[str, None] = {}
        last: int | None = None
        while True:
            item = await channel.basic_get(registry, no_ack=False)
            if isinstance(item.delivery, spec.Basic.GetEmpty):
                break
            names[item.body.decode(errors="replace")] = None
            last = item.delivery_tag
        for name in names:
            await self._record(channel, registry, name)
        self._registered.update(names)
        if last is not None:
            await channel.queue_declare(registry, durable=True)  # the records are in
            await channel.basic_ack(last, multiple=True)

    async def _record(self, channel: AbstractChannel, registry: str, queue: str) -> None:
        await channel.basic_publish(
            queue.encode(), routing_key=registry, properties=spec.Basic.Properties(delivery_mode=2)
        )

    @property
    def stream(self) -> str | None:
        """The stream that keeps every event published (``retain=``), or None."""
        return f"{self.exchange}.history" if self.settings.retain else None

    async def declare_exchange(self, channel: Opener) -> None:
        """The events exchange and, with ``retain=``, its stream bound with ``#``."""
        ch = await channel()
        await ch.exchange_declare(exchange=self.exchange, exchange_type="topic", durable=True)
        stream = self.stream
        if stream is not None:
            max_age = f"{max(1, round(self.settings.retain))}s"
            arguments: dict[str, Any] = {"x-queue-type": "stream", "x-max-age": max_age}
            await ch.queue_declare(stream, durable=True, arguments=arguments)
            await self.register(ch, stream)
            await ch.queue_bind(stream, self.exchange, routing_key="#")

    async def declare_subscription(self, channel: Opener, sub: Subscription) -> str:
        """Declare the durable queue of ``sub`` and bind its patterns; return its name."""
        queue = self.settings.name(sub.queue)
        arguments = self.subscription_arguments(sub)
        try:
            await self._declare_bound(await channel(), queue, arguments, sub.patterns)
        except aiormq.ChannelPreconditionFailed as exc:
            if SAC in " ".join(str(arg) for arg in exc.args):
                raise _exclusivity_differs(queue, sub) from exc
            raise
        self.arguments[queue] = arguments
        known = self.bindings.get(queue, ())
        self.bindings[queue] = tuple(dict.fromkeys(known + sub.patterns))
        return queue

    async def declare_transient(self, channel: AbstractChannel, sub: Subscription) -> str:
        """An exclusive queue that disappears with its consumer (or connection)."""
        queue = self.settings.name(sub.queue)
        await channel.queue_declare(queue, exclusive=True, auto_delete=True)
        for pattern in sub.patterns:
            await channel.queue_bind(queue, self.exchange, routing_key=pattern)
        return queue

    async def declare_retry_queue(self, channel: Opener, queue: str, bucket_ms: int) -> str:
        """The TTL queue in which messages of ``queue`` wait ``bucket_ms`` to return."""
        name = retry_queue_name(queue, bucket_ms)
        if name not in self.retries:
            arguments = {
                **self.queue_arguments(),
                "x-message-ttl": bucket_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
            }
            ch = await channel()
            await ch.queue_declare(name, durable=True, arguments=arguments)
            await self.register(ch, name)
            self.retries[name] = arguments
        return name

    async def declare_dead_letter_queue(self, channel: Opener, service: str) -> str:
        name = self.settings.name(dead_letter_queue(service))
        if name not in self.dead_letters:
            await self._declare_dead_letters(channel, name)
        return name

    async def _declare_dead_letters(self, channel: Opener, name: str) -> None:
        ch = await channel()
        try:
            await ch.queue_declare(name, durable=True, arguments=self.dead_letter_arguments())
        except aiormq.ChannelPreconditionFailed as exc:
            with contextlib.suppress(Exception):
                await ch.close()  # the server closed it: the next one is a new one
            ch = await channel()
            await ch.queue_declare(name, passive=True)
            log.warning(
                "dead-letter queue %s exists with other arguments than dlq_retention=%ds "
                "asks for (%s); using it as it is, without that retention. To apply it, give "
                "the queue a policy with message-ttl %d, or delete it once it is empty",
                name,
                self.settings.dlq_retention,
                " ".join(str(arg) for arg in exc.args),
                self.settings.dlq_retention * 1000,
            )
        await self.register(ch, name)
        self.dead_letters.add(name)

    async def redeclare(self, channel: Opener) -> None:
        """Declare everything known again (after a reconnect)."""
        await self.declare_exchange(channel)
        for name in list(self.dead_letters):
            await self._declare_dead_letters(channel, name)
        for name, arguments in list(self.retries.items()):
            await (await channel()).queue_declare(name, durable=True, arguments=arguments)
        for queue, patterns in list(self.bindings.items()):
            arguments = self.arguments.get(queue, {})
            await self._declare_bound(await channel(), queue, arguments, patterns)

    async def registered(self, channel: AbstractChannel) -> list[str]:
        """The queues of the namespace's registry, the registry itself last."""
        registry = self.registry
        if registry is None:
            return []
        await channel.queue_declare(registry, durable=True)
        names: dict[str, None] = {}
        while True:
            item = await channel.basic_get(registry, no_ack=True)
            if isinstance(item.delivery, spec.Basic.GetEmpty):
                break
            names[item.body.decode()] = None
        return [*names, registry]

    async def destroy(self, channel: Opener) -> None:
        """Delete every queue declared here or recorded in the registry, and the exchange."""
        ch = await channel()
        stream = [self.stream] if self.stream else []
        names = dict.fromkeys([*self.bindings, *self.retries, *self.dead_letters, *stream])
        names.update(dict.fromkeys(await self.registered(ch)))
        for queue in names:
            await ch.queue_delete(queue)
        await ch.exchange_delete(self.exchange)
        self.bindings.clear()
        self.arguments.clear()
        self.retries.clear()
        self.dead_letters.clear()
        self._registered.clear()
        self._compacted = False

    async def _declare_bound(
        self,
        channel: AbstractChannel,
        queue: str,
        arguments: dict[str, Any],
        patterns: tuple[str, ...],
    ) -> None:
        await channel.queue_declare(queue, durable=True, arguments=arguments)
        await self.register(channel, queue)
        for pattern in patterns:
            await channel.queue_bind(queue, self.exchange, routing_key=pattern)


def _exclusivity_differs(queue: str, sub: Subscription) -> ConfigurationError:
    remedy = (
        "RabbitMQ cannot change that argument on an existing queue: stop its consumers, "
        f"let it drain, delete it (rabbitmqctl delete_queue {queue}) and start again"
    )
    if sub.exclusive:
        return ConfigurationError(
            f"queue {queue} exists without {SAC}, so it cannot be consumed by one process "
            f"at a time as the exclusive subscription {sub.queue} asks. {remedy}; or "
            "subscribe with exclusive=False"
        )
    return ConfigurationError(
        f"queue {queue} was declared exclusive ({SAC}) and the subscription {sub.queue} "
        f"is not. {remedy}; or subscribe with exclusive=True"
    )
