"""Deliveries from a Redis stream and the operations that settle them.

An ack is ``XACK`` + ``XDEL`` (a script per stream): the stream keeps only unsettled
entries. Acks of deliveries that finish together go in one script call per stream, a
few turns of the event loop later, unless the stream's consumer reads first: its read
script then carries them (one round trip for both). Retry, release
and dead-lettering are scripts too (see :mod:`.scripts`), so that the copy and the
removal of the original happen together or not at all.

A delivery gives its prefetch slot back as soon as it is settled, and stops being
held (renewed by the heartbeat) once the settlement is done or has failed: an entry
whose settlement failed is no longer renewed, so it is claimed again after the lease.
The last settlement of an exclusive queue's holder that stopped consuming lets go of
the queue's lock (:meth:`Settler.hand_over`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from ...broker import Delivery, Subscription
from ...deadletter import DeadLetterReason
from ...errors import ErrorTable, MessageError
from ...message import Message
from ...window import Window
from . import scripts
from .settings import RedisSettings
from .topology import Keys
from .wire import ATTEMPT_FIELD, ID_FIELD

__all__ = ["Holder", "RedisDelivery", "Settler"]

log = logging.getLogger("herald.brokers.redis")
_ACK_CHUNK = 1000
_FLUSH_TURNS = 3


@dataclass(eq=False, slots=True)
class Holder:
    """One ``consume()`` call: its name in the queue's consumer group and the entries
    it holds unsettled (renewed by the heartbeat until settled)."""

    queue: str
    stream: str
    name: str
    lock: str | None = None
    """The queue's lock key when the subscription is exclusive."""
    handoff: str | None = None
    locked: bool = False
    """Whether this consumer holds the lock (it takes deliveries; else it stands by)."""
    held: set[bytes] = field(default_factory=set)
    open: bool = True
    claim_soon: bool = False
    largest: int = 0
    """The largest body read so far (sizes a blocking read)."""

    @property
    def group(self) -> str:
        return self.queue


class Settler:
    """Runs ack, retry, release and dead-letter against Redis for a broker's deliveries."""

    def __init__(
        self,
        client: Redis,
        keys: Keys,
        settings: RedisSettings,
        table: ErrorTable,
        on_retry: Callable[[str], None],
    ) -> None:
        self._client = client
        self._keys = keys
        self._settings = settings
        self._table = table
        self._on_retry = on_retry
        self._ack = client.register_script(scripts.ACK)
        self._retry = client.register_script(scripts.RETRY)
        self._release = client.register_script(scripts.RELEASE)
        self._dead_letter = client.register_script(scripts.DEAD_LETTER)
        self._let_go = client.register_script(scripts.LET_GO)
        self._acks: dict[str, tuple[Holder, list[bytes]]] = {}
        """Per stream, the ids of the acks queued for the next batch."""
        self._replies: dict[str, asyncio.Future[None]] = {}
        """Per stream, the future the acks queued for the next batch wait on."""
        self._flusher: asyncio.Task[None] | None = None
        self._resending: set[asyncio.Task[None]] = set()

    async def ack(self, holder: Holder, entry_id: bytes) -> None:
        queued = self._acks.get(holder.stream)
        if queued is None:
            queued = self._acks[holder.stream] = (holder, [])
        queued[1].append(entry_id)
        reply = self._replies.get(holder.stream)
        if reply is None:
            reply = self._replies[holder.stream] = asyncio.get_running_loop().create_future()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_acks())
        # not shielded: a cancelled wait leaves the id in the batch, which is sent anyway
        await reply

    def take_acks(self, holder: Holder) -> tuple[list[bytes], asyncio.Future[None] | None]:
        """The acks queued for ``holder``'s stream, for the caller to send with its read
        (none beyond a chunk: the flusher sends those); it then calls :meth:`acks_sent`."""
        queued = self._acks.get(holder.stream)
        if queued is None or len(queued[1]) > _ACK_CHUNK:
            return [], None
        del self._acks[holder.stream]
        return queued[1], self._replies.pop(holder.stream, None)

    def acks_sent(
        self,
        holder: Holder,
        ids: list[bytes],
        reply: asyncio.Future[None] | None,
        problem: BaseException | None,
    ) -> None:
        """The read that carried ``ids`` succeeded, or failed with ``problem``: then they
        are sent again on their own (acking twice is harmless)."""
        if problem is None:
            if reply is not None and not reply.done():
                reply.set_result(None)
            return
        task = asyncio.create_task(self._ack_again(holder, ids, reply))
        self._resending.add(task)
        task.add_done_callback(self._resending.discard)

    async def _ack_again(
        self, holder: Holder, ids: list[bytes], reply: asyncio.Future[None] | None
    ) -> None:
        (result,) = await self._send_acks([(holder.stream, holder.group, ids)])
        if reply is None or reply.done():
            return
        if result is None:
            reply.set_result(None)
        else:
            reply.set_exception(self._ack_error(result, holder.queue))

    def _ack_error(self, problem: BaseException, queue: str) -> BaseException:
        error = self._table.convert(problem, f"acknowledging on {queue}")
        error.__cause__ = problem
        return error

    async def hand_over(self, holder: Holder) -> None:
        """Let go of the exclusive queue's lock once ``holder`` stopped consuming and
        holds nothing more; a standby takes over at once."""
        if holder.open or holder.held or not holder.locked:
            return
        holder.locked = False
        assert holder.lock is not None and holder.handoff is not None
        args: list[Any] = [holder.name, self._settings.lease_ms]
        try:
            with self._table.converting(f"handing {holder.queue} over"):
                await self._let_go(keys=[holder.lock, holder.handoff], args=args)
        except Exception as exc:  # the lock lapses after a lease anyway
            log.warning("handing %s over failed: %s", holder.queue, exc)

    async def drain(self) -> None:
        """Wait for the acks already requested to be sent."""
        waiting = [*self._resending, *([self._flusher] if self._flusher is not None else [])]
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)

    async def _flush_acks(self) -> None:
        while self._acks:
            # a few turns of the loop: a consumer about to read takes its stream's acks
            # along (:meth:`take_acks`), saving a round trip
            for _ in range(_FLUSH_TURNS):
                await asyncio.sleep(0)
            batch, self._acks = self._acks, {}
            replies, self._replies = self._replies, {}
            calls = [
                (stream, holder.group, ids[start : start + _ACK_CHUNK])
                for stream, (holder, ids) in batch.items()
                for start in range(0, len(ids), _ACK_CHUNK)
            ]
            if not calls:
                continue
            # one script call per stream, not a pipeline: a pipeline with scripts costs a
            # SCRIPT EXISTS round trip each time
            try:
                results = await self._send_acks(calls)
            except BaseException:
                for reply in replies.values():
                    reply.cancel()
                raise
            failed = {
                stream: result
                for (stream, _, _), result in zip(calls, results, strict=True)
                if result is not None
            }
            for stream, reply in replies.items():
                if reply.done():
                    continue
                problem = failed.get(stream)
                if problem is None:
                    reply.set_result(None)
                else:
                    reply.set_exception(self._ack_error(problem, batch[stream][0].queue))

    async def _send_acks(
        self, calls: list[tuple[str, str, list[bytes]]]
    ) -> list[BaseException | None]:
        """Each call's failure, or None; the usual single call is awaited without a task."""
        if len(calls) == 1:
            stream, group, ids = calls[0]
            try:
                await self._ack(keys=[stream], args=[group, *ids])
            except Exception as exc:
                return [exc]
            return [None]
        results = await asyncio.gather(
            *(self._ack(keys=[s], args=[g, *chunk]) for s, g, chunk in calls),
            return_exceptions=True,
        )
        return [r if isinstance(r, BaseException) else None for r in results]

    async def retry(
        self,
        holder: Holder,
        entry_id: bytes,
        delay: float,
        attempts: int,
        headers: Mapping[str, str],
    ) -> None:
        args: list[Any] = [holder.group, entry_id, max(0, round(delay * 1000))]
        args += [ATTEMPT_FIELD, attempts]
        for name, value in headers.items():
            args += (name, value)
        keys = [holder.stream, self._keys.delayed(holder.queue)]
        with self._table.converting(f"scheduling a retry on {holder.queue}"):
            await self._retry(keys=keys, args=args)
        self._on_retry(holder.queue)

    async def release(self, holder: Holder, entry_id: bytes) -> None:
        args: list[Any] = [holder.group, holder.name, self._settings.lease_ms, entry_id]
        with self._table.converting(f"releasing a delivery on {holder.queue}"):
            await self._release(keys=[holder.stream], args=args)
        holder.claim_soon = True

    async def dead_letter(
        self,
        holder: Holder,
        entry_id: bytes,
        message_id: str,
        service: str,
        reason: DeadLetterReason,
    ) -> None:
        args: list[Any] = [holder.group, entry_id, ATTEMPT_FIELD]
        args += [self._settings.dlq_retention_ms, ID_FIELD, message_id]
        for name, value in reason.to_headers().items():
            args += (name, value)
        keys = [holder.stream, self._keys.dead_letters(service)]
        with self._table.converting(f"dead-lettering from {holder.queue}"):
            await self._dead_letter(keys=keys, args=args)


class RedisDelivery(Delivery):
    """One stream entry handed to this process. ``attempt`` = the attempts recorded in
    the entry (``herald-attempt``, on a retried copy) + the group's delivery count."""

    __slots__ = ("_entry_id", "_holder", "_previous", "_settler", "_size", "_window")

    def __init__(
        self,
        message: Message,
        subscription: Subscription,
        attempt: int,
        *,
        error: MessageError | None,
        settler: Settler,
        holder: Holder,
        window: Window,
        entry_id: bytes,
        size: int,
    ) -> None:
        super().__init__(message, subscription, attempt, error=error)
        self._settler = settler
        self._holder = holder
        self._window = window
        self._entry_id = entry_id
        self._size = size
        window.take(size)

    @property
    def size(self) -> int:
        return self._size

    def _settling(self) -> None:
        self._window.give(self._size)

    async def _settled(self) -> None:
        holder = self._holder
        holder.held.discard(self._entry_id)
        if not holder.open:
            await self._settler.hand_over(holder)

    async def _ack(self) -> None:
        self._settling()
        try:
            await self._settler.ack(self._holder, self._entry_id)
        finally:
            await self._settled()

    async def _retry(self, delay: float, headers: Mapping[str, str]) -> None:
        self._settling()
        merged = {**headers, ID_FIELD: self.message.id}
        try:
            await self._settler.retry(self._holder, self._entry_id, delay, self.attempt, merged)
        finally:
            await self._settled()

    async def _release(self) -> None:
        self._settling()
        try:
            await self._settler.release(self._holder, self._entry_id)
        finally:
            await self._settled()

    async def _dead_letter(self, reason: DeadLetterReason) -> None:
        self._settling()
        try:
            await self._settler.dead_letter(
                self._holder, self._entry_id, self.message.id, self.subscription.service, reason
            )
        finally:
            await self._settled()
