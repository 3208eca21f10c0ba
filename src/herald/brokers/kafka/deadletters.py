"""Dead letters: a one-partition topic per service, ``herald.dlq.<service>``.

Kafka cannot delete one record, so removal is a record too: replay and purge append
a marker (header ``herald-kafka-removed``, body a JSON list of offsets) and a
listing leaves out what a marker removed. Replay sends each letter, as a first
attempt, to tier 0 of the retry topics of the queue it came from: only that
queue's group reads it, never the other services. Letters and markers expire
with the topic's ``retention.ms`` (``dlq_retention``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from ...broker import ProgressCallback
from ...deadletter import DeadLetter
from ...errors import BrokerError, ErrorTable
from ...message import Message
from .connection import consumer_options
from .publisher import Publisher
from .settings import KafkaSettings
from .topology import Topology, read_to_end
from .wire import decode

__all__ = ["REMOVED", "DeadLetterStore"]

REMOVED = "herald-kafka-removed"
_CHUNK = 20_000
"""Offsets per marker record (well under a megabyte of JSON)."""


class DeadLetterStore:
    def __init__(
        self,
        settings: KafkaSettings,
        topology: Topology,
        publisher: Publisher,
        table: ErrorTable,
    ) -> None:
        self._settings = settings
        self._topology = topology
        self._publisher = publisher
        self._table = table

    async def letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        found = [letter for _, letter in await self._read(service)]
        return found if limit is None else found[:limit]

    async def replay(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
        edited: Message | None = None,
    ) -> int:
        """Replay the chosen letters; with ``edited``, the first of them as that message."""
        chosen = self._chosen(await self._read(service), ids)
        if edited is not None:
            chosen = chosen[:1]
        names = self._topology.names
        existing = set(await self._topology.topics())
        total, done = len(chosen), 0
        for start in range(0, total, 100):
            batch = chosen[start : start + 100]
            records = []
            for _, letter in batch:
                queue = letter.reason.queue
                topic = names.retry(queue, 0)
                if not queue.startswith(f"{service}.") or topic not in existing:
                    raise BrokerError(f"queue {queue[:200]!r} no longer exists; cannot replay")
                records.append((topic, edited or letter.for_replay(), 1, 0))
            await self._publisher.send(records)
            await self._remove(service, [offset for offset, _ in batch])
            done += len(batch)
            if progress is not None:
                progress(done, total)
        return total

    async def purge(self, service: str, ids: Collection[str] | None = None) -> int:
        chosen = self._chosen(await self._read(service), ids)
        await self._remove(service, [offset for offset, _ in chosen])
        return len(chosen)

    @staticmethod
    def _chosen(
        letters: list[tuple[int, DeadLetter]], ids: Collection[str] | None
    ) -> list[tuple[int, DeadLetter]]:
        if ids is None:
            return letters
        wanted = set(ids)
        return [(offset, dl) for offset, dl in letters if dl.message.id in wanted]

    async def _remove(self, service: str, offsets: Sequence[int]) -> None:
        topic = await self._topology.dead_letter_topic(service)
        for start in range(0, len(offsets), _CHUNK):
            body = json.dumps(list(offsets[start : start + _CHUNK])).encode()
            marker = Message(type="herald.removed", body=body, headers={REMOVED: "1"})
            await self._publisher.send([(topic, marker, 1, 0)])

    async def _read(self, service: str) -> list[tuple[int, DeadLetter]]:
        """The live letters of a service with their offsets, oldest first."""
        topic = self._topology.names.dead_letters(service)
        if topic not in await self._topology.topics():
            return []
        partition = TopicPartition(topic, 0)
        reader = AIOKafkaConsumer(**consumer_options(self._settings, None))
        letters: dict[int, DeadLetter] = {}
        removed: set[int] = set()
        with self._table.converting(f"reading the dead letters of {service}"):
            await reader.start()
            try:
                reader.assign([partition])
                await reader.seek_to_beginning(partition)
                async for record in read_to_end(reader, [partition]):
                    headers = [(k, bytes(v)) for k, v in record.headers or ()]
                    if any(name == REMOVED for name, _ in headers):
                        removed.update(_offsets(record.value or b""))
                        continue
                    decoded = decode(record.key, headers, record.value or b"", None)
                    letters[record.offset] = DeadLetter.from_stored(decoded.message)
            finally:
                await reader.stop()
        return [(offset, dl) for offset, dl in sorted(letters.items()) if offset not in removed]


def _offsets(body: bytes) -> list[int]:
    try:
        found = json.loads(body)
    except ValueError:
        return []
    if not isinstance(found, list):
        return []
    return [n for n in found if isinstance(n, int) and not isinstance(n, bool)]
