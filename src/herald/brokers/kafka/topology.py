"""Server-side names: an events topic per family of event types (the first word of
the type: ``employee.created`` and ``employee.deleted`` share ``events.employee``, so
one key's events stay in order across the family's types), retry tiers per queue,
dead letters per service, one consumer group per queue; and the regular expression
a group subscribes with. Herald's own types (replies ``herald.reply.<token>``,
requests ``rpc.<type>``) keep a topic each.

>>> names = Names("t1")
>>> names.events("employee.created"), names.group("payroll.employee.created")
('t1.herald.events.employee', 't1.herald.group.payroll.employee.created')
>>> names.events("herald.reply.00ff")
't1.herald.events.herald.reply.00ff'
>>> names.retry("payroll.employee.created", 1000), names.dead_letters("payroll")
('t1.herald.retry.payroll.employee.created.1000ms', 't1.herald.dlq.payroll')
>>> rx = re.compile(names.subscription_regex(("employee.*", "audit.#"), "payroll.all"))
>>> [bool(rx.fullmatch(t)) for t in (
...     "t1.herald.events.employee", "t1.herald.events.employees",
...     "t1.herald.events.audit", "t1.herald.events.herald.reply.00ff",
...     "t1.herald.retry.payroll.all.0ms", "t1.herald.retry.payroll.other.0ms")]
[True, False, True, False, True, False]
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code
from aiokafka.protocol.admin import DeleteGroupsRequest
from aiokafka.structs import ConsumerRecord

from ...errors import BrokerError, ErrorTable
from ...topic import is_pattern
from .settings import KafkaSettings

__all__ = [
    "MAX_TOPIC",
    "QUIET",
    "TIERS",
    "Names",
    "Topology",
    "read_through",
    "read_to_end",
    "tier_for",
]

MAX_TOPIC = 249
"""Kafka's longest topic name."""
TIERS = (0, 1_000, 10_000, 60_000, 600_000, 3_600_000)
"""Retry delays in milliseconds, one topic each per queue. A retry waits in the
smallest tier at least as long as its delay, until its own due time: records of one
tier come due in nearly the order they were written, so a partition waits only for
its head record, and never longer than the tier's own delay."""
_WORD = "[A-Za-z0-9_-]+"
_TOPIC_EXISTS = 36
QUIET = 150
"""Milliseconds without a record after which a partition is taken as read to its end."""
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_OWN = ("herald.", "rpc.")
"""Herald's own event types (replies, requests): a topic each, as each has a queue
of its own, never in a family's topic."""


def tier_for(delay: float) -> int:
    """The retry tier (milliseconds) for a delay in seconds.

    >>> tier_for(0), tier_for(0.2), tier_for(1), tier_for(45), tier_for(86_400)
    (0, 1000, 1000, 60000, 3600000)
    """
    millis = delay * 1000
    for tier in TIERS:
        if millis <= tier:
            return tier
    return TIERS[-1]


class Names:
    """Topic and group names of one namespace (every name starts with its prefix)."""

    def __init__(self, namespace: str = "") -> None:
        self.prefix = f"{namespace}.herald." if namespace else "herald."
        self.anchor = f"{self.prefix}groups"
        """A one-partition topic every group commits an offset on when declared, so
        that a group that exists is told from one that does not."""
        self.state = f"{self.prefix}state"
        """The compacted topic of declared queues and live consumers (:mod:`.presence`)."""

    def events(self, event_type: str) -> str:
        """The topic of an event type: its family's (first word), or its own for
        Herald's types."""
        family = event_type if event_type.startswith(_OWN) else event_type.split(".", 1)[0]
        return f"{self.prefix}events.{family}"

    def pattern_topic(self, pattern: str) -> str | None:
        """The one topic a pattern's types are in, when its first word says so."""
        first = pattern.split(".", 1)[0]
        if pattern.startswith(_OWN):
            return None if is_pattern(pattern) else self.events(pattern)
        return None if first in ("*", "#") else self.events(first)

    def event_type(self, topic: str) -> str | None:
        """The family (or Herald type) an events topic carries, the type of a record
        that names none (None for other topics)."""
        root = f"{self.prefix}events."
        if topic.startswith(root) and _EVENT_TYPE.fullmatch(topic[len(root) :]):
            return topic[len(root) :]
        return None

    def group(self, queue: str) -> str:
        return f"{self.prefix}group.{queue}"

    def retry(self, queue: str, tier: int) -> str:
        return self._bounded("retry.", queue, f".{tier}ms")

    def retry_topics(self, queue: str) -> list[str]:
        return [self.retry(queue, tier) for tier in TIERS]

    def dead_letters(self, service: str) -> str:
        return self._bounded("dlq.", service, "")

    def is_ours(self, name: str) -> bool:
        return name.startswith(self.prefix)

    def subscription_regex(self, patterns: tuple[str, ...], queue: str) -> str:
        """The topics of a queue: the events its patterns match, and its retry tiers."""
        alternatives = [self._pattern(pattern) for pattern in sorted(set(patterns))]
        alternatives += [re.escape(topic) for topic in self.retry_topics(queue)]
        return "^(?:" + "|".join(alternatives) + ")$"

    def _pattern(self, pattern: str) -> str:
        if not pattern.startswith(_OWN):
            topic = self.pattern_topic(pattern)
            root = re.escape(f"{self.prefix}events.")
            return re.escape(topic) if topic is not None else f"{root}{_WORD}"
        parts: list[str] = [re.escape(f"{self.prefix}events")]
        previous = ""
        for word in pattern.split("."):
            if word == "#":
                if previous != "#":  # '#.#' matches what '#' does; one keeps it linear
                    parts.append(rf"(?:\.{_WORD})*")
            elif word == "*":
                parts.append(rf"\.{_WORD}")
            else:
                parts.append(re.escape(f".{word}"))
            previous = word
        return "".join(parts)

    def _bounded(self, root: str, name: str, suffix: str) -> str:
        topic = f"{self.prefix}{root}"
        full = f"{topic}{name}{suffix}"
        if len(full) <= MAX_TOPIC:
            return full
        digest = hashlib.blake2b(name.encode(), digest_size=16).hexdigest()
        return f"{topic}{name[:80]}.{digest}{suffix}"


class Topology:
    """Creates the topics Herald uses, once each per broker (idempotently)."""

    def __init__(self, admin: AIOKafkaAdminClient, settings: KafkaSettings, table: ErrorTable):
        self.names = Names(settings.namespace)
        self._admin = admin
        self._settings = settings
        self._table = table
        self._known: set[str] = set()
        self._lock = asyncio.Lock()

    def forget(self, topics: Collection[str] | None = None) -> None:
        if topics is None:
            self._known.clear()
        else:
            self._known.difference_update(topics)

    async def ensure(
        self,
        topics: Collection[str],
        partitions: int | None = None,
        configs: Mapping[str, str] | None = None,
    ) -> None:
        """Create the topics that do not exist yet."""
        missing = [topic for topic in topics if topic not in self._known]
        if not missing:
            return
        settings = self._settings
        async with self._lock:
            missing = [topic for topic in missing if topic not in self._known]
            if not missing:
                return
            new = [
                NewTopic(
                    topic,
                    partitions or settings.partitions,
                    settings.replication,
                    topic_configs=dict(configs or {}),
                )
                for topic in missing
            ]
            with self._table.converting(f"creating topics {', '.join(missing)[:300]}"):
                response = await self._admin.create_topics(new)
            for topic, code, *rest in response.topic_errors:
                if code not in (0, _TOPIC_EXISTS):
                    text = rest[0] if rest and rest[0] else for_code(code).__name__
                    raise BrokerError(f"creating topic {topic} failed: {text}")
            self._known.update(missing)

    async def topics(self) -> list[str]:
        """Every topic of this namespace."""
        with self._table.converting("listing topics"):
            found = await self._admin.list_topics()
        return sorted(topic for topic in found if self.names.is_ours(topic))

    async def dead_letter_topic(self, service: str) -> str:
        """The dead-letter topic of a service (one partition: oldest first), created
        with ``retention.ms`` from ``dlq_retention``."""
        topic = self.names.dead_letters(service)
        retention = self._settings.dlq_retention
        configs = {"retention.ms": str(retention * 1000 if retention else -1)}
        await self.ensure([topic], partitions=1, configs=configs)
        return topic

    async def describe(self, topics: list[str]) -> list[dict[str, Any]]:
        """Topic metadata (``topic``, ``partitions``: ``partition``, ...)."""
        with self._table.converting("describing topics"):
            described: list[dict[str, Any]] = await self._admin.describe_topics(topics)
        return [d for d in described if not d.get("error_code")]

    async def delete_topics(self, topics: Collection[str]) -> None:
        if topics:
            with self._table.converting("deleting topics"):
                await self._admin.delete_topics(list(topics))
            self.forget(topics)

    async def groups(self) -> list[str]:
        """The consumer groups of this namespace."""
        with self._table.converting("listing groups"):
            found = await self._admin.list_consumer_groups()
        return sorted(g[0] for g in found if str(g[0]).startswith(f"{self.names.prefix}group."))

    async def delete_groups(self, groups: Collection[str]) -> None:
        with self._table.converting("deleting groups"):
            for group in groups:
                node = await self._admin.find_coordinator(group)
                await self._admin._send_request_to_node(node, DeleteGroupsRequest([group]))


async def read_to_end(
    reader: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """The records of assigned ``partitions`` from their positions to their ends.

    The end is where a fetch brings nothing more for :data:`QUIET` milliseconds, not
    the reported high watermark, which some servers (Tansu) set one past the first
    record of the last batch rather than past its last record.
    """
    while True:
        batch = await reader.getmany(*partitions, timeout_ms=QUIET)
        if not any(batch.values()):
            return
        for records in batch.values():
            for record in records:
                yield record


async def read_through(
    reader: AIOKafkaConsumer, last: Mapping[TopicPartition, int]
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """The records of assigned partitions from their positions through the batch
    holding offset ``last[tp]`` (the reported high watermark less one), without
    waiting :data:`QUIET` milliseconds at the end as :func:`read_to_end` does.

    A batch comes whole, so once the record at the reported high watermark less one
    has come, the rest of its batch (all a server like Tansu leaves past its high
    watermark) has come with it. Should that record never come (removed since), a
    fetch that brings nothing for :data:`QUIET` milliseconds ends the read.
    """
    waiting = set(last)
    while waiting:
        batch = await reader.getmany(*waiting, timeout_ms=QUIET)
        if not any(batch.values()):
            return
        for tp, records in batch.items():
            for record in records:
                yield record
            if records and records[-1].offset >= last[tp]:
                waiting.discard(tp)
