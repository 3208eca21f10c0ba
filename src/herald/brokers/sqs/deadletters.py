"""Dead letters: a standard queue per service, ``<service>.dlq``, read without a peek.

Each dead letter is the message as it was received, plus its reason as headers
(``herald-dl-*``, carried in ``herald-headers``). The queue's
``MessageRetentionPeriod`` is ``dlq_retention``: SQS drops a letter that long after
it was dead-lettered, natively.

SQS cannot list a queue without receiving from it. Listing, replay and purge receive
every letter (as many as ``ApproximateNumberOfMessages`` said, ten a call), keep
them invisible while they work, then delete what they moved or purged and make the
rest visible again at once. Two of them running at the same moment on one service
see each other's letters as missing. Letters are returned oldest first (by the time
SQS stored them). Replay does not use ``StartMessageMoveTask``: it sends each letter
back to the queue named in its reason, as a new message (a first attempt), ten a
call, then deletes it from the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Collection
from typing import Any

from ...broker import ProgressCallback
from ...deadletter import DeadLetter
from ...errors import BrokerError, ErrorTable
from ...message import Message
from .batch import BATCH
from .delivery import Held, Settler
from .settings import SQSSettings
from .topology import Topology
from .wire import decode

__all__ = ["DeadLetterStore"]

Letter = tuple[Held, DeadLetter]


class DeadLetterStore:
    """List, replay and purge the dead letters of a namespace's services."""

    def __init__(
        self,
        sqs: Any,
        topology: Topology,
        settings: SQSSettings,
        table: ErrorTable,
        settler: Settler,
    ) -> None:
        self._sqs = sqs
        self._topology = topology
        self._settings = settings
        self._table = table
        self._settler = settler

    async def letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        letters = await self._take(service)
        await self._give_back(letters)
        return [letter for _, letter in letters[:limit]]

    async def replay(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
        edited: Message | None = None,
    ) -> int:
        """Replay the chosen letters; with ``edited``, the first of them as that message."""
        letters = await self._take(service)
        chosen = [item for item in letters if ids is None or item[1].message.id in ids]
        if edited is not None:
            chosen = chosen[:1]
        await self._give_back([item for item in letters if item not in chosen])
        try:
            targets = {}
            for _, letter in chosen:
                queue = letter.reason.queue
                if queue not in targets:
                    url = await self._topology.url(self._topology.names.queue(queue))
                    if url is None:
                        raise BrokerError(f"queue {queue[:200]!r} no longer exists; cannot replay")
                    targets[queue] = url
        except BaseException:
            await self._give_back(chosen)
            raise
        done = 0
        fifo = self._topology.names.fifo
        for start in range(0, len(chosen), BATCH):
            batch = chosen[start : start + BATCH]
            with self._table.converting(f"replaying the dead letters of {service}"):
                await asyncio.gather(
                    *(
                        self._settler.send(
                            targets[letter.reason.queue],
                            edited or letter.for_replay(),
                            fifo=fifo,
                            dedup=uuid.uuid4().hex,
                        )
                        for _, letter in batch
                    )
                )
                await asyncio.gather(*(self._settler.delete(held) for held, _ in batch))
            done += len(batch)
            if progress:
                progress(done, len(chosen))
        return done

    async def purge(self, service: str, ids: Collection[str] | None = None) -> int:
        letters = await self._take(service)
        chosen = [item for item in letters if ids is None or item[1].message.id in ids]
        await self._give_back([item for item in letters if item not in chosen])
        with self._table.converting(f"purging the dead letters of {service}"):
            await asyncio.gather(*(self._settler.delete(held) for held, _ in chosen))
        return len(chosen)

    async def _take(self, service: str) -> list[Letter]:
        """Every letter of ``service``, oldest first, received and kept invisible."""
        url = await self._topology.url(self._topology.names.dead_letters(service))
        if url is None:
            return []
        loop = asyncio.get_running_loop()
        visibility = max(30, self._settings.visibility)
        taken: list[tuple[int, Letter]] = []
        with self._table.converting(f"reading the dead letters of {service}"):
            reply = await self._sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
            )
            expected = int(reply.get("Attributes", {}).get("ApproximateNumberOfMessages", "0"))
            while len(taken) < expected:
                reply = await self._sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=min(BATCH, expected - len(taken)),
                    VisibilityTimeout=visibility,
                    WaitTimeSeconds=1,
                    MessageAttributeNames=["All"],
                    MessageSystemAttributeNames=["SentTimestamp"],
                )
                received = reply.get("Messages") or []
                if not received:
                    break
                now = loop.time()
                for item in received:
                    held = Held(url, item["ReceiptHandle"], now + visibility, now)
                    message, _ = decode(item)
                    sent = int(item.get("Attributes", {}).get("SentTimestamp", "0") or 0)
                    taken.append((sent, (held, DeadLetter.from_stored(message))))
        taken.sort(key=lambda item: item[0])
        return [letter for _, letter in taken]

    async def _give_back(self, letters: list[Letter]) -> None:
        with contextlib.suppress(BrokerError):
            await asyncio.gather(*(self._settler.change(held, 0) for held, _ in letters))
