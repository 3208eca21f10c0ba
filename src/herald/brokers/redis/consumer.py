"""The consume loop: reading and claiming a queue stream's entries within the window.

Each ``consume()`` call is one consumer of the queue's group, named
``host:pid:broker:serial``. It holds no more than its prefetch window
(:class:`herald.window.Window`: messages and bytes of body) allows; one body larger
than the byte bound still flows, alone. The read script reads as many entries as the
count bound allows and gives back at once, inside the script, those beyond the byte
bound (claimable by anyone, counting no delivery); the claim script takes entries
one at a time while the window has room. When no entry is ready the consumer blocks
in ``XREADGROUP``, for as many entries as the room left would hold were they as large
as the largest body it has seen, and gives back any beyond the room.

Every ``lease/2`` (and when it starts, or after a release) it sweeps the group's
pending entries with ``XAUTOCLAIM`` for those idle for a whole lease: entries of
consumers that died (live ones renew theirs, see :mod:`.housekeeper`) and released
ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import Any, cast

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

Entry = tuple[bytes, dict[bytes, bytes], int]
"""A stream entry id, its fields and how often the group delivered it."""


class _QueueGone(Exception):
    """The queue's stream or group vanished (a server restarted without persistence)."""


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

    async def consume(
        self, subscription: Subscription, prefetch: Prefetch
    ) -> AsyncGenerator[Delivery, None]:
        await self._declare(subscription)
        queue = subscription.queue
        holder = Holder(queue, self._keys.queue(queue), f"{self._name}:{next(self._serial)}")
        window = Window(prefetch)
        unyielded: list[bytes] = []
        loop = asyncio.get_running_loop()
        cursor, next_sweep = START, 0.0
        try:
            await self._housekeeper.attach(holder)
            while True:
                await window.room()
                try:
                    if holder.claim_soon or cursor != START or loop.time() >= next_sweep:
                        if cursor == START:
                            next_sweep = loop.time() + self._settings.lease / 2
                        holder.claim_soon = False
                        cursor, entries = await self._claim_entries(holder, cursor, window)
                    else:
                        entries = await self._read_entries(holder, window)
                        if not entries:
                            wait = min(self._settings.block, next_sweep - loop.time())
                            entries = await self._wait_entries(holder, window, max(0.01, wait))
                except _QueueGone:
                    log.warning(
                        "queue %s vanished from redis (restarted without persistence?); "
                        "declaring it again: what it held is lost",
                        queue,
                    )
                    await self._declare(subscription)
                    cursor = START
                    continue
                # a claim can return what this consumer still holds, had its heartbeat
                # been late: it is being handled here already
                entries = [entry for entry in entries if entry[0] not in holder.held]
                unyielded = [entry_id for entry_id, _, _ in entries]
                holder.held.update(unyielded)
                holder.largest = max(
                    [holder.largest, *(len(f.get(_BODY, b"")) for _, f, _ in entries)]
                )
                for entry in entries:
                    delivery = self._delivery(subscription, holder, window, entry)
                    unyielded.remove(entry[0])
                    yield delivery
        finally:
            holder.held.difference_update(unyielded)
            await self._housekeeper.detach(holder)
            if not subscription.durable:
                await self._undeclare(subscription)

    def _delivery(
        self, subscription: Subscription, holder: Holder, window: Window, entry: Entry
    ) -> RedisDelivery:
        entry_id, fields, delivered = entry
        message, previous, error = decode_entry(entry_id, fields)
        return RedisDelivery(
            message,
            subscription,
            previous + delivered,
            error=error,
            settler=self._settler,
            holder=holder,
            window=window,
            entry_id=entry_id,
            size=len(fields.get(_BODY, b"")),
        )

    def _window_args(self, window: Window) -> list[int]:
        return [window.used, window.bytes, window.limit.messages, window.limit.bytes]

    async def _read_entries(self, holder: Holder, window: Window) -> list[Entry]:
        """New entries, as many as the window has room for; none waited for. Entries
        read beyond the byte bound were given back: claim them (in order) soon."""
        args: list[Any] = [holder.group, holder.name, *self._window_args(window)]
        with self._converting(f"reading {holder.queue}"):
            entries, given_back = await self._read(
                keys=[holder.stream], args=[*args, self._settings.lease_ms]
            )
        holder.claim_soon = holder.claim_soon or given_back > 0
        return [(entry_id, _fields(flat), 1) for entry_id, flat in entries]

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
            async with asyncio.timeout(seconds + 10.0):
                reply: list[Any] = await cast(Awaitable[Any], read)
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
        self, holder: Holder, cursor: bytes, window: Window
    ) -> tuple[bytes, list[Entry]]:
        """Entries idle for a lease, with their delivery counts, and where the sweep
        goes on (``0-0``: done)."""
        keys = [holder.stream, self._keys.consumers(holder.queue)]
        args: list[Any] = [holder.group, holder.name, self._settings.lease_ms, cursor]
        with self._converting(f"claiming from {holder.queue}"):
            next_cursor, claimed = await self._claim(
                keys=keys, args=[*args, *self._window_args(window)]
            )
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
