"""Dead letters on JetStream: a limits-retention stream ``<ns>_DLQ`` over
``<ns.>dlq.<service>``, read in place, replayed to one queue, deleted by sequence.

A replayed message goes to ``<ns.>replay.<consumer>``, a subject only that queue's
replay consumer is bound to, so the other queues bound to the event type do not get
it a second time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from nats.errors import Error as NATSError
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from ..broker import ProgressCallback
from ..deadletter import DeadLetter
from ..errors import BrokerError, ConnectionLostError, PublishError
from ..message import Message
from .nats_names import Names, consumer_name
from .nats_wire import from_headers, to_headers

__all__ = ["DeadLetterStore", "StoredLetter"]


@dataclass(frozen=True, slots=True)
class StoredLetter:
    seq: int
    letter: DeadLetter


class DeadLetterStore:
    """The dead letters of every service in one namespace."""

    def __init__(self, js: JetStreamContext, names: Names, timeout: float) -> None:
        self._js = js
        self._names = names
        self._timeout = timeout

    async def store(self, service: str, stored: Message, dedup_id: str) -> None:
        """Publish a dead letter and wait for JetStream to have stored it."""
        await publish_confirmed(
            self._js,
            self._names.dlq_subject(service),
            stored.body,
            to_headers(stored, msg_id=dedup_id),
            self._timeout,
        )

    async def read(self, service: str, limit: int | None = None) -> list[StoredLetter]:
        subject = self._names.dlq_subject(service)
        found: list[StoredLetter] = []
        seq = 1
        while limit is None or len(found) < limit:
            try:
                raw = await self._js.get_msg(
                    self._names.streams.dlq, seq=seq, subject=subject, next=True
                )
            except NotFoundError:
                break
            except (TimeoutError, NATSError) as exc:
                raise ConnectionLostError(
                    f"cannot read dead letters of {service}: {exc!r}"
                ) from exc
            stored = from_headers(raw.headers, raw.data or b"", None)
            found.append(StoredLetter(raw.seq or 0, DeadLetter.from_stored(stored)))
            seq = (raw.seq or seq) + 1
        return found

    async def replay(
        self,
        service: str,
        ids: Collection[str] | None,
        progress: ProgressCallback | None,
        has_queue: Callable[[str], Awaitable[bool]],
    ) -> int:
        chosen = [s for s in await self.read(service) if ids is None or s.letter.message.id in ids]
        known: dict[str, bool] = {}
        for done, item in enumerate(chosen, 1):
            queue = item.letter.reason.queue
            if queue not in known:
                known[queue] = await has_queue(consumer_name(queue))
            if not known[queue]:
                raise BrokerError(f"queue {queue!r} no longer exists; cannot replay")
            message = item.letter.for_replay()
            # Keyed by the dead letter, not the message: a message dead-lettered and
            # replayed twice is stored twice, a replay retried after a timeout once.
            headers = to_headers(message, msg_id=f"replay:{self._names.streams.dlq}:{item.seq}")
            subject = self._names.replay_subject(queue)
            await publish_confirmed(self._js, subject, message.body, headers, self._timeout)
            await self._delete(item.seq)
            if progress:
                progress(done, len(chosen))
        return len(chosen)

    async def purge(self, service: str, ids: Collection[str] | None) -> int:
        chosen = [s for s in await self.read(service) if ids is None or s.letter.message.id in ids]
        for item in chosen:
            await self._delete(item.seq)
        return len(chosen)

    async def _delete(self, seq: int) -> None:
        try:
            await self._js.delete_msg(self._names.streams.dlq, seq)
        except NotFoundError:
            pass
        except (TimeoutError, NATSError) as exc:
            raise BrokerError(f"cannot delete dead letter #{seq}: {exc!r}") from exc


async def publish_confirmed(
    js: JetStreamContext, subject: str, body: bytes, headers: dict[str, str], timeout: float
) -> None:
    """One JetStream publish, returning once the server stored it."""
    try:
        await js.publish(subject, body, timeout=timeout, headers=headers)
    except (TimeoutError, NATSError) as exc:
        raise PublishError(f"JetStream did not confirm the publish to {subject}: {exc!r}") from exc
