"""The exchange, queues and bindings the ``amqp://`` broker declares, and remembers.

Every declaration is idempotent, so the whole set is declared again after each
reconnect (a broker restart may have lost a queue someone deleted meanwhile).

Delayed retries need no plugin: a retried message waits in a durable TTL queue
``<queue>.retry.<ms>ms`` whose expired messages dead-letter back to ``<queue>``
through the default exchange. Delays are rounded to the nearest bucket of a small
ladder, so a queue has at most a dozen such siblings.

With a namespace, every durable queue declared is also recorded as a message in
the registry queue ``<namespace>.herald-registry``; AMQP cannot list queues, and
``destroy()`` (test teardown, possibly from another process) needs them all.

>>> delay_bucket(0.0), delay_bucket(0.4), delay_bucket(0.75), delay_bucket(7200)
(0, 500, 1000, 3600000)
"""

from __future__ import annotations

import math
from typing import Any

from aiormq.abc import AbstractChannel
from pamqp import commands as spec

from ..broker import Subscription, dead_letter_queue
from .amqp_settings import AMQPSettings

__all__ = ["DELAY_BUCKETS_MS", "Topology", "delay_bucket"]

DELAY_BUCKETS_MS = (
    100,
    250,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    30_000,
    60_000,
    300_000,
    900_000,
    3_600_000,
)
_SMALLEST_DELAY = 0.03


def delay_bucket(delay: float) -> int:
    """The TTL in milliseconds of the bucket nearest ``delay`` (log scale); 0 for none."""
    if delay < _SMALLEST_DELAY:
        return 0
    wanted = math.log(delay * 1000)
    return min(DELAY_BUCKETS_MS, key=lambda ms: abs(math.log(ms) - wanted))


class Topology:
    """Declares names inside the namespace and keeps track of them for redeclare/destroy."""

    def __init__(self, settings: AMQPSettings) -> None:
        self.settings = settings
        self.bindings: dict[str, tuple[str, ...]] = {}
        """Durable subscription queue (server name) -> the patterns bound to it."""
        self.plain: dict[str, dict[str, Any]] = {}
        """Retry and dead-letter queues (server name) -> their arguments."""
        self.arguments: dict[str, dict[str, Any]] = {}
        """Durable subscription queue (server name) -> its arguments."""
        self._registered: set[str] = set()

    @property
    def registry(self) -> str | None:
        return self.settings.name("herald-registry") if self.settings.namespace else None

    async def register(self, channel: AbstractChannel, queue: str) -> None:
        """Record ``queue`` in the namespace's registry (once per broker object)."""
        registry = self.registry
        if registry is None or queue in self._registered:
            return
        if not self._registered:
            await channel.queue_declare(registry, durable=True)
        await channel.basic_publish(
            queue.encode(),
            routing_key=registry,
            properties=spec.Basic.Properties(delivery_mode=2),
        )
        self._registered.add(queue)

    @property
    def exchange(self) -> str:
        return self.settings.exchange

    def queue_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "quorum"} if self.settings.queue_type == "quorum" else {}

    async def declare_exchange(self, channel: AbstractChannel) -> None:
        await channel.exchange_declare(exchange=self.exchange, exchange_type="topic", durable=True)

    def subscription_arguments(self, sub: Subscription) -> dict[str, Any]:
        """Quorum queues dead-letter to ``<service>.dlq``: RabbitMQ 4 drops a message
        redelivered more than 20 times (its default delivery limit) unless they do."""
        if self.settings.queue_type != "quorum":
            return {}
        return {
            **self.queue_arguments(),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.settings.name(sub.dead_letter_queue),
        }

    async def declare_subscription(self, channel: AbstractChannel, sub: Subscription) -> str:
        """Declare the durable queue of ``sub`` and bind its patterns; return its name."""
        queue = self.settings.name(sub.queue)
        known = self.bindings.get(queue, ())
        arguments = self.subscription_arguments(sub)
        if arguments:
            await self.declare_dead_letter_queue(channel, sub.service)
        await channel.queue_declare(queue, durable=True, arguments=arguments)
        self.arguments[queue] = arguments
        await self.register(channel, queue)
        for pattern in sub.patterns:
            await channel.queue_bind(queue, self.exchange, routing_key=pattern)
        self.bindings[queue] = tuple(dict.fromkeys(known + sub.patterns))
        return queue

    async def declare_transient(self, channel: AbstractChannel, sub: Subscription) -> str:
        """An exclusive queue that disappears with its consumer (or connection)."""
        queue = self.settings.name(sub.queue)
        await channel.queue_declare(queue, exclusive=True, auto_delete=True)
        for pattern in sub.patterns:
            await channel.queue_bind(queue, self.exchange, routing_key=pattern)
        return queue

    def retry_queue_name(self, queue: str, bucket_ms: int) -> str:
        return f"{queue}.retry.{bucket_ms}ms"

    async def declare_retry_queue(
        self, channel: AbstractChannel, queue: str, bucket_ms: int
    ) -> str:
        """The TTL queue in which messages of ``queue`` wait ``bucket_ms`` to return."""
        name = self.retry_queue_name(queue, bucket_ms)
        if name not in self.plain:
            arguments = {
                **self.queue_arguments(),
                "x-message-ttl": bucket_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
            }
            await channel.queue_declare(name, durable=True, arguments=arguments)
            await self.register(channel, name)
            self.plain[name] = arguments
        return name

    async def declare_dead_letter_queue(self, channel: AbstractChannel, service: str) -> str:
        name = self.settings.name(dead_letter_queue(service))
        if name not in self.plain:
            arguments = self.queue_arguments()
            await channel.queue_declare(name, durable=True, arguments=arguments)
            await self.register(channel, name)
            self.plain[name] = arguments
        return name

    async def redeclare(self, channel: AbstractChannel) -> None:
        """Declare everything known again (after a reconnect)."""
        await self.declare_exchange(channel)
        for name, arguments in list(self.plain.items()):
            await channel.queue_declare(name, durable=True, arguments=arguments)
        for queue, patterns in list(self.bindings.items()):
            arguments = self.arguments.get(queue, {})
            await channel.queue_declare(queue, durable=True, arguments=arguments)
            for pattern in patterns:
                await channel.queue_bind(queue, self.exchange, routing_key=pattern)

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

    async def destroy(self, channel: AbstractChannel) -> None:
        """Delete every queue declared here or recorded in the registry, and the exchange."""
        names = dict.fromkeys([*self.bindings, *self.plain])
        names.update(dict.fromkeys(await self.registered(channel)))
        for queue in names:
            await channel.queue_delete(queue)
        await channel.exchange_delete(self.exchange)
        self.bindings.clear()
        self.arguments.clear()
        self.plain.clear()
        self._registered.clear()
