"""Dead letters on JetStream: a limits-retention stream ``<ns>_DLQ`` over
``<ns.>dlq.<service>``, kept ``dlq_retention`` seconds (the stream's ``max_age``),
read in place, replayed to one queue, deleted by sequence.

A replayed message goes to ``<ns.>replay.<consumer>``, a subject only that queue's
replay consumer is bound to, so the other queues bound to the event type do not get
it a second time. Anyone can publish into a dead-letter subject, so what a dead
letter says is checked before a replay follows it: it must name an existing queue
of the service whose dead letters are replayed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from ...broker import ProgressCallback
from ...deadletter import DeadLetter, DeadLetterReason
from ...errors import BrokerError, HeraldError, PublishError
from ...message import Message
from .errors import TABLE, is_too_large
from .topology import Topology, consumer_name, queue_of
from .wire import check_fits, from_headers, header_bytes, to_headers, undecodable

__all__ = ["REASON_ROOM", "DeadLetterStore", "StoredLetter"]

log = logging.getLogger("herald.brokers.nats")
REASON_ROOM = 6 * 1024
"""Bytes of ``max_payload`` every stored message leaves free for a dead letter's
reason headers (a longer error text is shortened to fit)."""


@dataclass(frozen=True, slots=True)
class StoredLetter:
    seq: int
    letter: DeadLetter


class DeadLetterStore:
    """The dead letters of every service in one namespace."""

    def __init__(
        self,
        js: JetStreamContext,
        topology: Topology,
        max_payload: Callable[[], int],
        timeout: float,
    ) -> None:
        self._js = js
        self._topology = topology
        self._names = topology.names
        self._max_payload = max_payload
        self._timeout = timeout

    async def store(
        self, service: str, message: Message, reason: DeadLetterReason, dedup_id: str
    ) -> None:
        """Publish a dead letter and wait for JetStream to have stored it; an error text
        too long for the server's ``max_payload`` is shortened."""
        limit = self._max_payload()
        text = reason.error_message
        while True:
            stored = DeadLetter(message, replace(reason, error_message=text)).to_stored()
            headers = to_headers(stored, msg_id=dedup_id)
            over = len(message.body) + header_bytes(headers) - limit
            if over <= 0 or not text:
                break
            text = text[: max(0, len(text) - over)]
        check_fits(stored, headers, limit)
        subject = self._names.dlq_subject(service)
        await self._publish(self._names.streams.dlq, subject, stored, headers)

    async def read(self, service: str, limit: int | None = None) -> list[StoredLetter]:
        subject = self._names.dlq_subject(service)
        found: list[StoredLetter] = []
        seq = 1
        while limit is None or len(found) < limit:
            with TABLE.converting(f"reading dead letters of {service}"):
                try:
                    raw = await self._js.get_msg(
                        self._names.streams.dlq, seq=seq, subject=subject, next=True
                    )
                except NotFoundError:
                    break
            seq = raw.seq or seq
            found.append(StoredLetter(seq, _letter(raw.headers, raw.data or b"", seq)))
            seq += 1
        return found

    async def replay(
        self,
        service: str,
        ids: Collection[str] | None,
        progress: ProgressCallback | None,
        edited: Message | None = None,
    ) -> int:
        """Replay the chosen letters; with ``edited``, the first of them as that message."""
        chosen = [s for s in await self.read(service) if ids is None or s.letter.message.id in ids]
        if edited is not None:
            chosen = chosen[:1]
        for queue in {item.letter.reason.queue for item in chosen}:
            await self._check_queue(service, queue)
        limit = self._max_payload()
        for done, item in enumerate(chosen, 1):
            message = edited or item.letter.for_replay()
            # Keyed by the dead letter, not the message: a message dead-lettered and
            # replayed twice is stored twice, a replay retried after a timeout once.
            headers = to_headers(message, msg_id=f"replay:{self._names.streams.dlq}:{item.seq}")
            check_fits(message, headers, limit)
            subject = self._names.replay_subject(item.letter.reason.queue)
            await self._publish(self._names.streams.replay, subject, message, headers)
            await self._delete(item.seq)
            if progress:
                progress(done, len(chosen))
        return len(chosen)

    async def purge(self, service: str, ids: Collection[str] | None) -> int:
        chosen = [s for s in await self.read(service) if ids is None or s.letter.message.id in ids]
        for item in chosen:
            await self._delete(item.seq)
        return len(chosen)

    async def _publish(
        self, stream: str, subject: str, message: Message, headers: dict[str, str]
    ) -> None:
        """One JetStream publish, returning once the server stored it."""
        try:
            with TABLE.converting(f"publishing to {subject}", as_=PublishError):
                await self._js.publish(
                    subject, message.body, timeout=self._timeout, headers=headers
                )
        except PublishError as exc:
            if is_too_large(exc.__cause__ or exc):
                raise await self._topology.too_large(stream, message, headers) from exc
            raise

    async def _check_queue(self, service: str, queue: str) -> None:
        if not queue.startswith(f"{service}."):
            raise BrokerError(
                f"a dead letter of {service} names queue {queue[:200]!r}, which is not one "
                "of its queues; nothing was replayed"
            )
        info = await self._topology.consumer_info(self._names.streams.replay, consumer_name(queue))
        described = None if info is None else info.config.description
        if info is None or (described is not None and queue_of(described) != queue):
            raise BrokerError(f"queue {queue!r} no longer exists; nothing was replayed")

    async def _delete(self, seq: int) -> None:
        with TABLE.converting(f"deleting dead letter #{seq}"), contextlib.suppress(NotFoundError):
            await self._js.delete_msg(self._names.streams.dlq, seq)


def _letter(raw: dict[str, str] | None, body: bytes, seq: int) -> DeadLetter:
    """A stored dead letter; one that does not decode (anyone can publish there) is
    listed as received, under the id ``nats-dlq-<seq>``, so that it can be purged."""
    try:
        return DeadLetter.from_stored(from_headers(raw, body, None, f"nats-dlq-{seq}"))
    except HeraldError as exc:
        log.warning("dead letter #%d does not decode: %s", seq, exc)
        return DeadLetter(
            undecodable(raw, body, None, f"nats-dlq-{seq}"),
            DeadLetterReason.from_headers(raw or {}),
        )
