"""``RetainedHistory`` on RabbitMQ: a new queue starts with what the events stream kept.

With ``retain=`` (a duration) the events exchange is also bound with ``#`` to a
stream, ``<exchange>.history`` (``x-queue-type=stream``, ``x-max-age``), which keeps
every event published. AMQP 0-9-1 cannot create a queue at a point of that stream,
and whatever is put into a bound queue lands behind the live events already in it.
So the history goes into a queue of its own, ``<queue>.backfill``, which the
consumer drains before the queue itself; the cut between the two is made exact with
two markers (messages with the ``herald-backfill`` header, never handed out):

1. under a lock (an exclusive queue ``<queue>.backfill-lock``: one process at a
   time, released by the server when its connection dies), nothing to do if the
   queue exists and no ``<queue>.backfill-pending`` record says a backfill of it was
   interrupted;
2. ``<queue>.backfill`` is declared, a *start* marker is published to the stream
   (confirmed), the pending record is written, then the queue is declared and bound:
   everything routed from then on is in it, and in the stream after the start marker;
3. a *cut* marker is published through a fanout exchange of its own bound to the
   stream and the queue, and the queue's messages up to the cut are taken
   (``basic.get``, not acked yet: the *head*);
4. the stream is read from ``since`` (or its first message) up to the cut: what the
   subscription's patterns match goes to ``<queue>.backfill``, except, after the
   start marker, what the head holds (by message id); then the head follows it
   there, in its order: each event is history or live, never both;
5. the pending record is deleted: that is the moment the backfill is done; then the
   head is acked in the queue (a crash in between delivers the head twice: at
   least once, never lost).

A crash before step 5 leaves the record: the next start (or the replica that was
waiting for the lock) empties ``<queue>.backfill`` and does steps 3 to 5 again with
the record's start marker. The consumer of a backfilled queue takes from
``<queue>.backfill`` first, until the server counts nothing ready there, everything
it handed out is settled and nothing came for a moment, then from the queue (and
deletes the empty ``<queue>.backfill`` the next time it starts). Retries and dead
letters of history events go to the queue's own retry and dead-letter queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec

from ...broker import Delivery, Prefetch, Subscription
from ...errors import BrokerError, CapabilityError, DecodeError
from ...tasks import cancel_and_wait
from ...topic import matches
from .connection import AMQPConnection, Opener
from .publisher import Outgoing, Publisher
from .topology import Topology
from .wire import best_effort, read

__all__ = ["MARKER", "History", "Opened", "backfill_queue"]

log = logging.getLogger("herald.amqp")

MARKER = "herald-backfill"
"""Header of the markers: ``<token>:start`` or ``<token>:cut:<attempt>``."""
BATCH = 500
"""History events copied per confirmed publish (and the stream consumer's credit)."""
LOCK_POLL = 0.2
"""Seconds between attempts to take the lock another process holds."""
IDLE = 0.3
"""Seconds without a delivery after which the backfill queue is checked for empty."""

Opened = Callable[[Subscription, Prefetch, str | None], AsyncGenerator[Delivery, None]]
"""``consume()`` of a subscription's queue or, given its name, of its backfill queue."""


def backfill_queue(queue: str) -> str:
    """The queue (server name) that holds the history of ``queue`` until consumed."""
    return f"{queue}.backfill"


class History:
    """Backfill from the events stream, and the consumer side of it."""

    def __init__(
        self,
        topology: Topology,
        connection: AMQPConnection,
        publisher: Publisher,
        declare: Callable[[Subscription], Awaitable[str]],
    ) -> None:
        self.topology = topology
        self.settings = topology.settings
        self.connection = connection
        self.publisher = publisher
        self._declare = declare
        self._backfilled: set[str] = set()
        """Queues (server names) whose handler asks for backfill: their consumer
        looks for a backfill queue first."""

    async def backfill(self, sub: Subscription, since: datetime | None) -> int:
        stream = self.topology.stream
        queue = self.settings.name(sub.queue)
        if stream is None:
            raise CapabilityError(
                f"the RabbitMQ broker {self.settings} keeps no history to backfill {queue} "
                "from: add ?retain=7d (or another duration) to the URL of the processes "
                "that use it, so that a stream of the events exchange keeps every event"
            )
        if sub.exclusive and self.settings.queue_type == "quorum":
            raise CapabilityError(
                f"backfill of the exclusive subscription {queue} needs queue_type=classic: "
                "RabbitMQ cannot basic.get from a quorum queue with a single active "
                "consumer, which is how the cut between history and live is read"
            )
        self._backfilled.add(queue)
        with self.connection.errors.converting(f"backfilling {queue}"):
            async with self.connection.aside() as opener:
                await _lock(opener, f"{queue}.backfill-lock", queue)
                return await self._fill(opener, sub, queue, stream, since)

    async def _fill(
        self, opener: Opener, sub: Subscription, queue: str, stream: str, since: datetime | None
    ) -> int:
        pending, target = f"{queue}.backfill-pending", backfill_queue(queue)
        exists, recorded = await self.connection.probe([queue, pending])
        if exists is not None and recorded is None:
            return 0
        channel = await opener()
        await channel.queue_declare(
            target, durable=True, arguments=self.topology.subscription_arguments(sub)
        )
        await self.topology.register(channel, target)
        if recorded is not None and recorded[0] > 0:
            token, since = await _read_record(channel, pending)
            await channel.queue_purge(target)
            log.warning("queue %s: an interrupted backfill is done again", queue)
        else:
            token = uuid.uuid4().hex
            await self._publish("", stream, f"{token}:start")
            await channel.queue_declare(pending, durable=True)
            await self.topology.register(channel, pending)
            record = json.dumps({"token": token, "since": since and since.timestamp()})
            properties = spec.Basic.Properties(delivery_mode=2)
            await self.publisher.publish([Outgoing("", pending, record.encode(), properties)])
        await self._declare(sub)  # bound: what is routed from now on collects in it
        head, cut = await self._cut(channel, stream, queue, token)
        async with self.connection.aside() as reader:  # its acks are not the head's
            count = await self._copy(await reader(), sub, stream, target, token, since, head)
        await self.publisher.publish([_copied(target, item) for item in head])
        await channel.queue_delete(pending)
        await channel.basic_ack(cut, multiple=True)  # the head is in the backfill queue
        return count

    async def _publish(self, exchange: str, routing_key: str, marker: str) -> None:
        properties = spec.Basic.Properties(
            headers={MARKER: marker}, delivery_mode=2, message_id=f"{MARKER}.{marker}"
        )
        await self.publisher.publish([Outgoing(exchange, routing_key, b"", properties)])

    async def _cut(
        self, channel: AbstractChannel, stream: str, queue: str, token: str
    ) -> tuple[list[DeliveredMessage], int]:
        """Publish the cut marker to the stream and the queue at once; take what the
        queue holds before it (unacked) and the cut's delivery tag."""
        exchange = f"{queue}.backfill-cut"
        await channel.exchange_declare(exchange, exchange_type="fanout", auto_delete=False)
        await channel.queue_bind(stream, exchange, routing_key="")
        await channel.queue_bind(queue, exchange, routing_key="")
        cut = f"{token}:cut:{uuid.uuid4().hex}"  # after a crash, Q holds earlier ones
        await self._publish(exchange, "", cut)
        await channel.exchange_delete(exchange)
        head: list[DeliveredMessage] = []
        while True:
            item = await channel.basic_get(queue, no_ack=False)
            if isinstance(item.delivery, spec.Basic.GetEmpty):
                raise BrokerError(f"backfilling {queue}: its cut marker did not arrive in it")
            if _marker(item) == cut:
                return head, item.delivery_tag or 0
            if _marker(item) is None:
                head.append(item)

    async def _copy(
        self,
        channel: AbstractChannel,
        sub: Subscription,
        stream: str,
        target: str,
        token: str,
        since: datetime | None,
        head: list[DeliveredMessage],
    ) -> int:
        """Copy the stream's events ``sub`` matches, from ``since`` up to the cut, to
        ``target``, leaving out after the start marker what ``head`` holds."""
        live = {_id(item) for item in head}
        inbox: asyncio.Queue[DeliveredMessage] = asyncio.Queue()

        async def received(item: DeliveredMessage) -> None:
            inbox.put_nowait(item)

        offset: Any = "first"
        if since is not None:  # whole seconds, and chunks: earlier ones are skipped below
            offset = min(since, datetime.now(UTC)) - timedelta(seconds=1)
        await channel.basic_qos(prefetch_count=BATCH)
        ok = await channel.basic_consume(stream, received, arguments={"x-stream-offset": offset})
        batch: list[Outgoing] = []
        count, after_start, unacked = 0, False, 0
        while True:
            item = await inbox.get()
            marker = _marker(item)
            if marker == f"{token}:start":
                after_start = True
            elif (
                marker is None
                and _wanted(item, sub, since)
                and not (after_start and _id(item) in live)
            ):
                batch.append(_copied(target, item))
            unacked += 1
            done = marker is not None and marker.startswith(f"{token}:cut")  # the first
            if len(batch) >= BATCH or done:
                await self.publisher.publish(batch)
                count += len(batch)
                batch = []
            if unacked >= BATCH // 2 or done:
                await channel.basic_ack(item.delivery_tag or 0, multiple=True)
                unacked = 0
            if done:
                await channel.basic_cancel(str(ok.consumer_tag))
                return count

    def consume(
        self, sub: Subscription, prefetch: Prefetch, opened: Opened
    ) -> AsyncGenerator[Delivery, None]:
        """The deliveries of ``sub``: those of its backfill queue first, if any."""
        queue = self.settings.name(sub.queue)
        if not sub.durable or queue not in self._backfilled:
            return opened(sub, prefetch, None)
        return self._history_first(sub, prefetch, opened, queue)

    async def _history_first(
        self, sub: Subscription, prefetch: Prefetch, opened: Opened, queue: str
    ) -> AsyncGenerator[Delivery, None]:
        target = backfill_queue(queue)
        [found] = await self.connection.probe([target])
        if found is not None and found[0] > 0:
            async with contextlib.aclosing(
                self._drain(opened(sub, prefetch, target), target)
            ) as old:
                async for delivery in old:
                    yield delivery
        elif found is not None:
            await self._delete_if_empty(target)
        async with contextlib.aclosing(opened(sub, prefetch, None)) as live:
            async for delivery in live:
                yield delivery

    async def _drain(
        self, deliveries: AsyncGenerator[Delivery, None], target: str
    ) -> AsyncGenerator[Delivery, None]:
        """Hand out what ``target`` holds until the server counts nothing ready in
        it, everything handed out is settled and nothing came for ``IDLE`` s."""
        ready: asyncio.Queue[Delivery | BaseException] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for delivery in deliveries:
                    ready.put_nowait(delivery)
            except Exception as exc:
                ready.put_nowait(exc)

        task = asyncio.get_running_loop().create_task(pump())
        handed: list[Delivery] = []
        try:
            while True:
                try:
                    item = await asyncio.wait_for(ready.get(), IDLE)
                except TimeoutError:
                    handed = [d for d in handed if d.settlement is None]
                    if handed:
                        continue
                    [found] = await self.connection.probe([target])
                    if found is None or found[0] == 0:
                        log.info("%s drained; consuming the live queue", target)
                        return
                    continue
                if isinstance(item, BaseException):
                    raise item
                handed.append(item)
                yield item
        finally:
            await cancel_and_wait(task)
            await deliveries.aclose()

    async def _delete_if_empty(self, target: str) -> None:
        with contextlib.suppress(Exception):
            async with self.connection.aside() as opener:
                await (await opener()).queue_delete(target, if_empty=True, if_unused=True)


async def _lock(opener: Opener, name: str, queue: str) -> None:
    """Declare the exclusive queue ``name``: wait while another connection has it."""
    waiting = False
    while True:
        channel = await opener()
        try:
            await channel.queue_declare(name, exclusive=True)
            return
        except aiormq.ChannelLockedResource:
            with contextlib.suppress(Exception):
                await channel.close()
        if not waiting:
            log.info("queue %s: another process is backfilling it; waiting for it", queue)
            waiting = True
        await asyncio.sleep(LOCK_POLL)


async def _read_record(channel: AbstractChannel, pending: str) -> tuple[str, datetime | None]:
    """The token and ``since`` of an interrupted backfill (left in its queue)."""
    item = await channel.basic_get(pending, no_ack=False)
    try:
        record = json.loads(item.body)
        token, since = str(record["token"]), record["since"]
        return token, None if since is None else datetime.fromtimestamp(float(since), UTC)
    except (ValueError, KeyError, TypeError) as exc:
        raise BrokerError(
            f"{pending} holds no backfill record ({exc}); delete it to backfill anew"
        ) from None


def _copied(target: str, item: DeliveredMessage) -> Outgoing:
    properties = item.header.properties
    headers = properties.headers or {}
    properties.headers = {k: v for k, v in headers.items() if k != "x-stream-offset"}
    return Outgoing("", target, item.body, properties)


def _marker(item: DeliveredMessage) -> str | None:
    value = (item.header.properties.headers or {}).get(MARKER)
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _id(item: DeliveredMessage) -> str:
    try:
        return read(item).id
    except DecodeError:
        return best_effort(item).id


def _wanted(item: DeliveredMessage, sub: Subscription, since: datetime | None) -> bool:
    key = str(getattr(item.delivery, "routing_key", "") or "")
    if not any(matches(pattern, key) for pattern in sub.patterns):
        return False
    if since is None:
        return True
    try:
        return read(item).time >= since
    except DecodeError:
        return True  # the consumer dead-letters it, naming the problem
