"""The consume loop: one consumer group member per ``consume()``, offsets committed
by hand below the lowest unfinished delivery of each partition.

A queue ``<service>.<name>`` is the consumer group ``herald.group.<queue>``,
subscribed by regular expression to the topics of the event types its patterns
match and to its own retry topics. Retry topics hold each record until its due
time: the partition is paused and sought back to it, and resumed when it is due;
other partitions go on.

A member counts as consuming (:class:`herald.capabilities.ConsumerStatus`, read by
readiness probes) from the first time its group assigned it partitions: subscribing
only asks to join, and the group answers after every member rejoined.

Rebalances: before a partition is taken away, the member waits (at most half the
rebalance timeout) for the deliveries it holds from it to be settled and commits
what is finished. A stopped consumer lingers in the background until what it handed
out is settled (at most :data:`DRAIN` seconds), commits, then leaves the group.
An exclusive queue's group gives every partition to its longest-standing member
(:class:`Oldest`), so the other members stand by.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import struct
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Mapping
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from ...broker import Prefetch, Subscription
from ...errors import ErrorTable
from ...topic import matches
from ...window import Window
from .connection import consumer_options
from .delivery import KafkaDelivery, Settlements
from .history import claim_start, first_offsets
from .offsets import OffsetTracker, Ticket
from .presence import Presence
from .publisher import Publisher
from .settings import KafkaSettings
from .topology import MAX_TOPIC, Topology, read_through
from .wire import decode

__all__ = ["COMMIT_INTERVAL", "DRAIN", "Oldest", "QueueConsumer"]

COMMIT_INTERVAL = 0.1
"""Seconds a settlement waits for its commit round at most when no ack waits for
them (each round is a request to the group coordinator: back to back, one per
settlement or two, they cost more than the deliveries)."""
DRAIN = 10.0
"""Seconds a stopped consumer waits for what it handed out to be settled."""
log = logging.getLogger("herald.kafka")
_SKIPPED = object()


class Oldest(AbstractPartitionAssignor):  # type: ignore[misc]
    """Every partition to the member that joined first (exclusive queues).

    Subclassed per consumer with its own ``started`` (aiokafka calls assignors as
    classes).
    """

    name = "herald-oldest"
    version = 0
    started = 0.0

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(
            cls.version, sorted(topics), struct.pack(">d", cls.started)
        )

    @classmethod
    def assign(
        cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        def seniority(member: str) -> tuple[float, str]:
            data = members[member].user_data or b""
            started = struct.unpack(">d", data)[0] if len(data) == 8 else float("inf")
            return started, member

        first = min(members, key=seniority)
        topics = sorted({topic for m in members.values() for topic in m.subscription})
        owned = [(topic, sorted(cluster.partitions_for_topic(topic) or ())) for topic in topics]
        return {
            member: ConsumerProtocolMemberAssignment(
                cls.version, owned if member == first else [], b""
            )
            for member in members
        }

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass


class QueueConsumer:
    """Makes the consumers of one broker and keeps the stopped ones until drained."""

    def __init__(
        self,
        settings: KafkaSettings,
        topology: Topology,
        publisher: Publisher,
        table: ErrorTable,
        producer: AIOKafkaProducer,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.publisher = publisher
        self.table = table
        self.background: set[asyncio.Task[None]] = set()
        self.closing = asyncio.Event()
        self.sessions: set[_Session] = set()
        self.presence = Presence(producer, topology, self.snapshot)

    def snapshot(self) -> dict[str, list[int]]:
        """Per queue: the consume loops of this broker, the deliveries they hold and
        those settled but not committable yet (see :mod:`.presence`)."""
        found: dict[str, list[int]] = {}
        for session in self.sessions:
            counts = found.setdefault(session.subscription.queue, [0, 0, 0])
            counts[0] += 1
            counts[1] += session.tracker.unfinished()
            counts[2] += session.tracker.settled()
        return found

    def consuming(self, queue: str) -> bool:
        """Whether a consume loop of ``queue`` joined its group (see ``_Session.joined``)."""
        return any(s.joined for s in self.sessions if s.subscription.queue == queue)

    async def declare(self, subscription: Subscription, history: datetime | bool = False) -> int:
        """Create the queue's topics; a group seen for the first time starts at the
        end of every topic its patterns match now (topics created later are read
        from their beginning: all they hold came after the group). With ``history``
        it starts at the oldest retained record instead (``True``), or at the first
        stored at or after a time: history and live in each partition's one order.
        Return how many records that start puts before the end (0: not first)."""
        names, topology = self.topology.names, self.topology
        await topology.ensure(names.retry_topics(subscription.queue))
        await topology.ensure([names.anchor], partitions=1)
        known = {names.pattern_topic(p) for p in subscription.patterns}
        await topology.ensure([t for t in known if t is not None and len(t) <= MAX_TOPIC])
        if subscription.durable:
            await topology.dead_letter_topic(subscription.service)
        with self.table.converting(f"declaring {subscription.queue}"):
            await self.presence.declared(subscription.queue, subscription.patterns)
        probe = AIOKafkaConsumer(**consumer_options(self.settings, names.group(subscription.queue)))
        with self.table.converting(f"declaring {subscription.queue}"):
            await probe.start()
            try:
                anchor = TopicPartition(names.anchor, 0)
                if await probe.committed(anchor) is not None:
                    return 0
                matcher = re.compile(names.subscription_regex(subscription.patterns, "-"))
                topics = [
                    t for t in await topology.topics() if names.event_type(t) and matcher.match(t)
                ]
                partitions: list[TopicPartition] = [anchor]
                if topics:
                    for described in await self._describe(topics):
                        partitions += [
                            TopicPartition(described["topic"], p["partition"])
                            for p in described["partitions"]
                        ]
                probe.assign(partitions)
                ends: dict[TopicPartition, int] = {}
                if partitions[1:]:
                    ends = await probe.end_offsets(partitions[1:])
                    last = {tp: end - 1 for tp, end in ends.items() if end > 0}
                    for tp, offset in last.items():
                        probe.seek(tp, offset)
                    # Through the batch at the reported end, not until the topics are
                    # quiet: they never are while publishers keep going.
                    async for record in read_through(probe, last):
                        tp = TopicPartition(record.topic, record.partition)
                        ends[tp] = max(ends[tp], record.offset + 1)
                starts = dict(ends)
                if history is not False and ends:
                    since = history if isinstance(history, datetime) else None
                    starts.update(await first_offsets(probe, list(ends), since, ends))
                if not await claim_start(probe, anchor, starts):
                    return 0
                return sum(max(0, ends[tp] - starts[tp]) for tp in ends)
            finally:
                await probe.stop()

    async def _describe(self, topics: list[str]) -> list[dict[str, Any]]:
        return await self.topology.describe(topics)

    async def remove(self, subscription: Subscription) -> None:
        """Delete a transient queue: its group, its retry topics and, for a reply
        queue, the topic of its one reply type."""
        names = self.topology.names
        topics = names.retry_topics(subscription.queue)
        topics += [names.events(p) for p in subscription.patterns if p.startswith("herald.reply.")]
        with contextlib.suppress(Exception):
            await self.topology.delete_groups([names.group(subscription.queue)])
        with contextlib.suppress(Exception):
            await self.topology.delete_topics(topics)

    async def consume(
        self, subscription: Subscription, prefetch: Prefetch
    ) -> AsyncGenerator[KafkaDelivery, None]:
        session = _Session(self, subscription, prefetch)
        await session.start()
        try:
            async for delivery in session.deliveries():
                yield delivery
        finally:
            task = asyncio.create_task(session.drain())
            self.background.add(task)
            task.add_done_callback(self.background.discard)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, session: _Session) -> None:
        self._session = session

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._session.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._session.joined = True


class _Session:
    """One member of a queue's group: fetches, hands out, tracks and commits."""

    def __init__(self, owner: QueueConsumer, subscription: Subscription, prefetch: Prefetch):
        self.owner = owner
        self.subscription = subscription
        self.window = Window(prefetch)
        self.tracker = OffsetTracker()
        self.epoch = 0
        self.joined = False
        """The group completed a join with this member: it holds its assignment (some
        partitions, or none when the group has more members than partitions or the
        queue is exclusive and another member is older)."""
        names = owner.topology.names
        self.retry_topics = frozenset(names.retry_topics(subscription.queue))
        options = consumer_options(owner.settings, names.group(subscription.queue))
        if subscription.exclusive:
            assignor: type[AbstractPartitionAssignor] = type(
                "OldestMember", (Oldest,), {"started": time.time()}
            )
        else:
            assignor = RoundRobinPartitionAssignor
        self.consumer = AIOKafkaConsumer(**options, partition_assignment_strategy=(assignor,))
        self.matcher = re.compile(
            names.subscription_regex(subscription.patterns, subscription.queue)
        )
        self.topics: frozenset[str] = frozenset()
        self._types: dict[str, bool] = {}
        self._defaults: dict[str, str] = {}
        self._listener = _Listener(self)
        self._watcher: asyncio.Task[None] | None = None
        self.settlements = Settlements(
            owner.publisher,
            owner.topology,
            self._finish,
            self._give_back,
            self._redeliver,
            self._committed,
        )
        self._again: deque[KafkaDelivery] = deque()
        self._dirty = asyncio.Event()
        self._full = asyncio.Event()
        self._uncommitted = 0
        self._round_size = max(1, prefetch.messages // 2)
        self._settled = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._round: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._committer: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []

    async def start(self) -> None:
        try:
            await self.owner.declare(self.subscription)
            with self.owner.table.converting(f"consuming {self.subscription.queue}"):
                await self._follow_topics()
                await self.consumer.start()
        except BaseException:  # made in __init__: stopped even if never started
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            raise
        self._committer = asyncio.create_task(self._commit_loop())
        self._watcher = asyncio.create_task(self._watch_topics())
        self.owner.sessions.add(self)
        self.owner.presence.changed()

    async def _follow_topics(self) -> None:
        """Subscribe to the topics the queue's patterns match now (a regular
        expression subscription relies on the server listing every topic in the
        metadata a consumer refreshes, which not every server does)."""
        found = frozenset(t for t in await self.owner.topology.topics() if self.matcher.match(t))
        if found != self.topics:
            self.topics = found
            self.consumer.subscribe(topics=sorted(found), listener=self._listener)

    async def _watch_topics(self) -> None:
        while True:
            await asyncio.sleep(self.owner.settings.metadata_age / 1000)
            try:
                await self._follow_topics()
            except Exception as exc:  # the next round tries again
                log.warning("%s: listing topics failed: %s", self.subscription.queue, exc)

    async def deliveries(self) -> AsyncGenerator[KafkaDelivery, None]:
        table, window = self.owner.table, self.window
        while True:
            await window.room()
            while self._again and window.has_room:
                again = self._again.popleft()
                window.take(again.size)
                self.owner.presence.changed()
                yield again
            if not window.has_room:
                continue
            with table.converting(f"fetching from {self.subscription.queue}"):
                batch = await self.consumer.getmany(timeout_ms=200, max_records=window.free)
            epoch = self.epoch  # a revocation from now on drops the rest of the batch
            for partition, records in batch.items():
                for record in records:
                    if self.epoch != epoch:
                        break
                    delivery = self._delivery(partition, record)
                    if delivery is _SKIPPED:
                        continue
                    if not isinstance(delivery, KafkaDelivery):
                        break
                    try:
                        await window.room()
                    except BaseException:  # stopped: the drain must not wait for it
                        self.tracker.unfetched(delivery.ticket)
                        raise
                    if self.epoch != epoch:
                        break
                    window.take(delivery.size)
                    self.owner.presence.changed()
                    yield delivery

    def _delivery(
        self, partition: TopicPartition, record: ConsumerRecord[bytes, bytes]
    ) -> KafkaDelivery | object | None:
        """The record as a delivery; None when it is a retry not due yet (the partition
        waits for it); :data:`_SKIPPED` when it is of a type the queue does not take
        (its family's topic holds every type of the family)."""
        topic = partition.topic
        retried = topic in self.retry_topics
        default = self._defaults.get(topic)
        if default is None:
            default = self._defaults[topic] = self.owner.topology.names.event_type(topic) or ""
        headers = [
            (name, value if type(value) is bytes else bytes(value))
            for name, value in record.headers or ()
        ]
        decoded = decode(record.key, headers, record.value or b"", default or None, retried=retried)
        if decoded.due > (now := time.time() * 1000):
            self._hold(partition, record.offset, (decoded.due - now) / 1000)
            return None
        if decoded.error is None and not retried and not self._wanted(decoded.message.type):
            self.tracker.skipped(partition, record.offset)
            self._dirty.set()
            return _SKIPPED
        ticket = self.tracker.fetched(partition, record.offset)
        return KafkaDelivery(
            decoded.message,
            self.subscription,
            decoded.attempt,
            ticket,
            self.settlements,
            error=decoded.error,
        )

    def _wanted(self, event_type: str) -> bool:
        wanted = self._types.get(event_type)
        if wanted is None:
            if len(self._types) > 10_000:
                self._types.clear()
            patterns = self.subscription.patterns
            wanted = self._types[event_type] = any(matches(p, event_type) for p in patterns)
        return wanted

    def _hold(self, partition: TopicPartition, offset: int, delay: float) -> None:
        """Wait for a retry to come due without fetching past it."""
        self.consumer.pause(partition)
        self.consumer.seek(partition, offset)
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(delay, self._resume, partition))

    def _resume(self, partition: TopicPartition) -> None:
        if partition in self.consumer.assignment():
            self.consumer.resume(partition)

    def _finish(self, ticket: Ticket) -> None:
        self.tracker.finish(ticket)
        self.owner.presence.changed()
        self._dirty.set()
        self._settled.set()
        self._uncommitted += 1
        if self._uncommitted >= self._round_size:
            self._full.set()

    def _give_back(self, delivery: KafkaDelivery) -> None:
        self.window.give(delivery.size)

    def _redeliver(self, delivery: KafkaDelivery) -> None:
        again = KafkaDelivery(
            delivery.message,
            delivery.subscription,
            delivery.attempt,
            delivery.ticket,
            self.settlements,
            error=delivery.error,
        )
        self._again.append(again)

    def _acks_wait(self) -> bool:
        """Whether an ack waits for the commit round that follows it. Not on a
        transient queue (RPC replies): its group goes with its caller, so a commit
        outliving a crash protects nothing, and its consumer acks one reply after
        the other."""
        return self.owner.settings.ack_commits and self.subscription.durable

    async def _commit_loop(self) -> None:
        """Commit rounds: back to back while acks wait for them; else once half the
        prefetch was settled since the last round, or :data:`COMMIT_INTERVAL` after
        the first settlement, so that a crash redelivers no more than a prefetch."""
        paced = not self._acks_wait()
        while True:
            await self._dirty.wait()
            if paced and not self._full.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), COMMIT_INTERVAL)
            self._dirty.clear()
            self._full.clear()
            self._uncommitted = 0
            done, self._round = self._round, asyncio.get_running_loop().create_future()
            try:
                await self.commit()
            finally:
                done.set_result(None)

    async def _committed(self) -> None:
        """Wait for the commit round that follows a settlement (it covers the
        settled offset unless a lower one of its partition is still unfinished)."""
        if not self._acks_wait():
            return
        if self._committer is not None and not self._committer.done():
            await asyncio.shield(self._round)

    async def commit(self, partitions: set[TopicPartition] | None = None) -> None:
        async with self._commit_lock:
            offsets = self.tracker.committable(partitions)
            assigned = self.consumer.assignment()
            mine = {tp: offset for tp, offset in offsets.items() if tp in assigned}
            if not mine:
                return
            try:
                await self.consumer.commit(mine)
            except KafkaError as exc:  # the next commit (or the next owner) makes up for it
                log.warning("%s: commit failed: %s", self.subscription.queue, exc)
            else:
                self.tracker.mark_committed(mine)

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        self.epoch += 1
        timeout = max(self.owner.settings.session_timeout * 3, 10_000) / 2000
        deadline = time.monotonic() + timeout
        while self.tracker.unfinished(partitions) and time.monotonic() < deadline:
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), deadline - time.monotonic())
        await self.commit(partitions)
        self.tracker.forget(partitions)
        self.owner.presence.changed()

    async def drain(self) -> None:
        """Stop fetching; once what was handed out is settled (or after DRAIN
        seconds, or when the broker closes), commit and leave the group."""
        with contextlib.suppress(Exception):
            self.consumer.pause(*self.consumer.assignment())
        deadline = time.monotonic() + DRAIN
        closing = self.owner.closing
        while self.tracker.unfinished() and time.monotonic() < deadline and not closing.is_set():
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), 0.1)
        for timer in self._timers:
            timer.cancel()
        try:
            for task in (self._committer, self._watcher):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            await self.commit()
        finally:
            if not self._round.done():
                self._round.set_result(None)
            self.owner.sessions.discard(self)
            self.owner.presence.changed()
            if not self.subscription.durable:
                with contextlib.suppress(Exception):
                    await self.owner.presence.removed(self.subscription.queue)
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            if not self.subscription.durable:
                await self.owner.remove(self.subscription)
