"""The consume loop: reading and claiming a queue stream's entries within the window.

Each ``consume()`` call is one consumer of the queue's group, named
``host:pid:broker:serial``. It holds no more than its prefetch window
(:class:`herald.window.Window`: messages and bytes of body) allows; one body larger
than the byte bound still flows, alone. The read script reads as many entries as the
count bound allows and gives back at once, inside the script, those beyond the byte
bound (claimable by anyone, counting no delivery); the claim script takes entries
one at a time while the window has room. Once its window is more than half full, it
reads again only when half is free, so that reads come in batches (the read carries
the acks queued meanwhile, see :mod:`.delivery`). When no entry is ready the consumer blocks
in ``XREADGROUP``, for as many entries as the room left would hold were they as large
as the largest body it has seen, and gives back any beyond the room.

Every ``lease/2`` (and when it starts, or after a release) it sweeps the group's
pending entries with ``XAUTOCLAIM`` for those idle for a whole lease: entries of
consumers that died (live ones renew theirs, see :mod:`.housekeeper`) and released
ones.

An exclusive subscription's consumer first takes the queue's lock (see
:mod:`.scripts`); until then it stands by, counted as a consumer, blocking on the
queue's hand-off list for as long as the lock has left to live (at most ``block``
seconds at a time). Once it holds the lock it sweeps first, taking every entry idle
for two thirds of a lease: the pending entries of a holder that died (its lock lapsed
a lease after its last renewal, and so did its entries), never those of a live one
(renewed every third of a lease). Only then does it read new entries, and it claims
released ones before reading on. It waits for new entries with a plain ``XREAD``, so
that every delivery is made by a script that checked the lock. A holder that stops
gives back at once what it read but never handed out, and keeps the lock until it has
settled everything it handed out (what it releases becomes claimable); then it lets
go, and a standby takes over where it stopped.

Closing the broker ends every consume loop: one waiting (for room, for entries, for
the lock) raises :class:`herald.BrokerError` at once, one suspended at ``yield`` when
it is resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ...broker import Delivery, Prefetch, Subscription
from ...errors import BrokerError, ErrorTable
from ...window import Window
from . import scripts
from .delivery import Holder, RedisDelivery, Settler
from .housekeeper import Housekeeper
from .settings import RedisSettings
from .topology import Keys
from .wire import BODY_FIELD, decode_entry

__all__ = ["QueueConsumer"]

log = logging.getLogger("herald.brokers.redis")
START = b"0-0"
_BODY = BODY_FIELD.encode()
T = TypeVar("T")

Entry = tuple[bytes, dict[bytes, bytes], int]
"""A stream entry id, its fields and how often the group delivered it."""


class _QueueGone(Exception):
    """The queue's stream or group vanished (a server restarted without persistence)."""


class _LockLost(Exception):
    """The exclusive queue's lock names another consumer, or nobody."""


class QueueConsumer:
    """Consumes queues for one broker: reads, claims and wraps entries as deliveries."""

    def __init__(
        self,
        client: Redis,
        keys: Keys,
        settings: RedisSettings,
        table: ErrorTable,
        name: str,
        settler: Settler,
        housekeeper: Housekeeper,
        declare: Callable[[Subscription], Awaitable[None]],
        undeclare: Callable[[Subscription], Awaitable[None]],
    ) -> None:
        self._client = client
        self._keys = keys
        self._settings = settings
        self._table = table
        self._name = name
        self._serial = itertools.count(1)
        self._settler = settler
        self._housekeeper = housekeeper
        self._declare = declare
        self._undeclare = undeclare
        self._read = client.register_script(scripts.READ)
        self._claim = client.register_script(scripts.CLAIM)
        self._release = client.register_script(scripts.RELEASE)
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transient: dict[Holder, Subscription] = {}

    async def close(self) -> None:
        """End every consume loop (the broker closes) and remove transient queues."""
        if self._closed.done():
            return
        self._closed.set_result(None)
        transient, self._transient = list(self._transient.values()), {}
        for subscription in transient:
            await self._undeclare(subscription)

    def _check_open(self) -> None:
        if self._closed.done():
            raise BrokerError(f"{self._settings.shown_url}: the broker was closed")

    def _check_running(self) -> None:
        """Raise the cancellation of the consuming task that a driver call swallowed.

        On Python 3.11 ``asyncio.wait_for`` (which redis-py sends commands with) returns
        normally when its task is cancelled just as the command completes; the task is
        then still marked as cancelling, and the loop must not carry on consuming.
        """
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        self._check_open()

    async def _unless_closed(self, waiting: Awaitable[T]) -> T:
        """``waiting``'s result, or :class:`herald.BrokerError` as soon as the broker closes."""
        task = asyncio.ensure_future(waiting)
        try:
            await asyncio.wait((task, self._closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._check_open()
        return task.result()

    async def consume(
        self, subscription: Subscription, prefetch: Prefetch
    ) -> AsyncGenerator[Delivery, None]:
        self._check_open()
        await self._declare(subscription)
        queue = subscription.queue
        holder = Holder(queue, self._keys.queue(queue), f"{self._name}:{next(self._serial)}")
        if subscription.exclusive:
            holder.lock, holder.handoff = self._keys.lock(queue), self._keys.handoff(queue)
        if not subscription.durable:
            self._transient[holder] = subscription
        window = Window(prefetch)
        refill = max(1, prefetch.messages // 2)
        unyielded: list[Entry] = []
        yielded = 0
        loop = asyncio.get_running_loop()
        cursor, next_sweep, idle = START, 0.0, self._settings.lease_ms
        try:
            await self._housekeeper.attach(holder)
            while True:
                self._check_running()
                if holder.lock is not None and not holder.locked:
                    await self._stand_by(holder)
                    # taking over: what a dead holder left goes first
                    cursor, idle, holder.claim_soon = START, self._settings.lease_ms * 2 // 3, True
                if window.used and not (window.has_room and window.free >= refill):
                    await self._unless_closed(window.room(refill))
                try:
                    if holder.claim_soon or cursor != START or loop.time() >= next_sweep:
                        if cursor == START:
                            next_sweep = loop.time() + self._settings.lease / 2
                        holder.claim_soon = False
                        cursor, entries = await self._claim_entries(holder, cursor, window, idle)
                        if cursor == START:
                            idle = self._settings.lease_ms
                    else:
                        entries, newest = await self._read_entries(holder, window)
                        if not entries and not holder.claim_soon:
                            wait = max(0.01, min(self._settings.block, next_sweep - loop.time()))
                            if newest is None:
                                entries = await self._wait_entries(holder, window, wait)
                            else:
                                await self._wait_newer(holder, newest, wait)
                except _QueueGone:
                    log.warning(
                        "queue %s vanished from redis (restarted without persistence?); "
                        "declaring it again: what it held is lost",
                        queue,
                    )
                    await self._declare(subscription)
                    cursor = START
                    continue
                except _LockLost:
                    log.warning(
                        "queue %s: this consumer no longer holds the exclusive lock (renewed "
                        "too late?); standing by",
                        queue,
                    )
                    holder.locked, cursor = False, START
                    continue
                # a claim can return what this consumer still holds, had its heartbeat
                # been late: it is being handled here already
                held = holder.held
                unyielded = [entry for entry in entries if entry[0] not in held]
                yielded = 0
                held.update(entry_id for entry_id, _, _ in unyielded)
                for entry in unyielded:
                    delivery = self._delivery(subscription, holder, window, entry)
                    yielded += 1
                    yield delivery
                    self._check_open()
        finally:
            holder.held.difference_update(entry_id for entry_id, _, _ in unyielded[yielded:])
            # once the broker closed, its housekeeper let go of every consumer
            if not self._closed.done():
                await self._housekeeper.detach(holder)
                if self._transient.pop(holder, None) is not None:
                    await self._undeclare(subscription)

    async def _stand_by(self, holder: Holder) -> None:
        """Wait until this consumer holds the exclusive queue's lock."""
        assert holder.lock is not None and holder.handoff is not None
        standing = False
        while True:
            self._check_running()
            with self._converting(f"taking the lock of {holder.queue}"):
                lapses_ms = await self._acquire(
                    keys=[holder.lock], args=[holder.name, self._settings.lease_ms]
                )
            if lapses_ms == 0:
                holder.locked = True
                if standing:
                    log.info("queue %s: took over as its exclusive consumer", holder.queue)
                return
            if not standing:
                standing = True
                log.info("queue %s: standing by (another consumer holds it)", holder.queue)
            seconds = max(0.01, min(lapses_ms / 1000, self._settings.block))
            wait = self._client.blpop([holder.handoff], timeout=seconds)
            with self._converting(f"standing by on {holder.queue}"):
                await self._unless_closed(self._bounded(wait, seconds))

    async def _bounded(self, command: Awaitable[T], seconds: float) -> T:
        async with asyncio.timeout(seconds + 10.0):
            return await command

    def _delivery(
        self, subscription: Subscription, holder: Holder, window: Window, entry: Entry
    ) -> RedisDelivery:
        entry_id, fields, delivered = entry
        message, previous, error = decode_entry(entry_id, fields)
        size = len(fields.get(_BODY, b""))
        holder.largest = max(holder.largest, size)
        return RedisDelivery(
            message,
            subscription,
            previous + delivered,
            error=error,
            settler=self._settler,
            holder=holder,
            window=window,
            entry_id=entry_id,
            size=size,
        )

    def _window_args(self, window: Window) -> list[int]:
        return [window.used, window.bytes, window.limit.messages, window.limit.bytes]

    async def _read_entries(
        self, holder: Holder, window: Window
    ) -> tuple[list[Entry], bytes | None]:
        """New entries, as many as the window has room for; none waited for. Entries
        read beyond the byte bound were given back: claim them (in order) soon. For an
        exclusive queue, also the newest entry's id (wait for entries after it)."""
        args: list[Any] = [holder.group, holder.name, *self._window_args(window)]
        keys = [holder.stream] if holder.lock is None else [holder.stream, holder.lock]
        acks, reply = self._settler.take_acks(holder)
        try:
            with self._converting(f"reading {holder.queue}"):
                entries, given_back, state = await self._read(
                    keys=keys, args=[*args, self._settings.lease_ms, *acks]
                )
        except BaseException as exc:
            if acks:
                self._settler.acks_sent(holder, acks, reply, exc)
            raise
        if acks:
            self._settler.acks_sent(holder, acks, reply, None)
        if state == b"lost":
            raise _LockLost
        holder.claim_soon = holder.claim_soon or given_back > 0 or state == b"claim"
        read = [(entry_id, _fields(flat), 1) for entry_id, flat in entries]
        return read, (state or None) if holder.lock is not None else None

    async def _wait_newer(self, holder: Holder, newest: bytes, seconds: float) -> None:
        """Wait up to ``seconds`` for an entry after ``newest``, reading nothing for the
        group (the read script, which checks the lock, takes it)."""
        wait = self._client.xread(
            {holder.stream: newest}, count=1, block=max(1, round(seconds * 1000))
        )
        with self._converting(f"waiting on {holder.queue}"):
            await self._unless_closed(self._bounded(wait, seconds))

    async def _wait_entries(self, holder: Holder, window: Window, seconds: float) -> list[Entry]:
        """New entries, waiting up to ``seconds`` for some. A blocking read cannot look
        at sizes first: it asks for as many as the room left would hold were they as
        large as the largest body seen, and gives back at once those beyond the room."""
        room = window.limit.bytes - window.bytes
        count = max(1, min(window.free, room // max(1, holder.largest)))
        read = self._client.xreadgroup(
            holder.group,
            holder.name,
            {holder.stream: ">"},
            count=count,
            block=max(1, round(seconds * 1000)),
        )
        with self._converting(f"reading {holder.queue}"):
            reply: list[Any] = await self._unless_closed(
                self._bounded(cast(Awaitable[Any], read), seconds)
            )
        entries = [(i, fields, 1) for _, got in reply or () for i, fields in got]
        used, size = window.used, window.bytes
        for n, (_, fields, _) in enumerate(entries):
            if not (used == 0 or (used < window.limit.messages and size < window.limit.bytes)):
                await self._give_back(holder, [entry_id for entry_id, _, _ in entries[n:]])
                return entries[:n]
            used += 1
            size += len(fields.get(_BODY, b""))
        return entries

    async def _give_back(self, holder: Holder, ids: list[bytes]) -> None:
        args: list[Any] = [holder.group, holder.name, self._settings.lease_ms, *ids]
        with self._converting(f"giving back entries of {holder.queue}"):
            await self._release(keys=[holder.stream], args=args)
        holder.claim_soon = True

    async def _claim_entries(
        self, holder: Holder, cursor: bytes, window: Window, idle_ms: int
    ) -> tuple[bytes, list[Entry]]:
        """Entries idle for ``idle_ms``, with their delivery counts, and where the sweep
        goes on (``0-0``: done)."""
        keys = [holder.stream, self._keys.consumers(holder.queue)]
        if holder.lock is not None:
            keys.append(holder.lock)
        args: list[Any] = [holder.group, holder.name, idle_ms, cursor]
        with self._converting(f"claiming from {holder.queue}"):
            next_cursor, claimed = await self._claim(
                keys=keys, args=[*args, *self._window_args(window)]
            )
        if next_cursor == b"lost":
            raise _LockLost
        if claimed:
            log.info("claimed %d abandoned deliveries of %s", len(claimed), holder.queue)
        return next_cursor, [(i, _fields(flat), int(count)) for i, flat, count in claimed]

    @contextlib.contextmanager
    def _converting(self, doing: str) -> Iterator[None]:
        """``table.converting(doing)``; a vanished queue raises :class:`_QueueGone`."""
        try:
            with self._table.converting(doing):
                yield
        except BrokerError as exc:
            cause = exc.__cause__
            if isinstance(cause, ResponseError) and (
                "NOGROUP" in str(cause) or "no such key" in str(cause)
            ):
                raise _QueueGone(str(exc)) from exc
            raise


def _fields(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=False))
