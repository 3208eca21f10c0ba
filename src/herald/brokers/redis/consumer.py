"""Reading queue streams as one consumer, claiming abandoned entries, and housekeeping.

:class:`QueueReader` turns ``XREADGROUP`` replies and claims into deliveries.
:class:`Housekeeper` runs a broker's two background loops: moving due retries from
the delayed set back to their queues, and renewing the lease of every delivery this
process still holds so that no other consumer claims it while a handler runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from ..broker import Subscription
from ..deadletter import DeadLetterReason
from ..errors import DecodeError
from .redis_delivery import Inflight, RedisDelivery, Settler, Window, broker_error
from .redis_fields import decode_fields
from .redis_scripts import MOVE_DUE, RENEW

__all__ = ["Housekeeper", "QueueReader"]

log = logging.getLogger("herald.brokers.redis")
MOVER_POLL = 1.0
"""Longest wait before looking for due retries scheduled by other processes."""
MOVE_BATCH = 200
START = b"0-0"

Entry = tuple[bytes, dict[bytes, bytes]]


class QueueReader:
    """Reads, claims and wraps the entries of queue streams for one consumer name."""

    def __init__(
        self,
        client: Redis,
        consumer: str,
        lease: float,
        settler: Settler,
        redeclare: Callable[[Subscription], Awaitable[None]],
    ) -> None:
        self._client = client
        self._consumer = consumer
        self._lease_ms = round(lease * 1000)
        self._settler = settler
        self._redeclare = redeclare

    async def read(
        self, subscription: Subscription, inflight: Inflight, count: int, wait: float
    ) -> list[Entry]:
        """New entries (``>``), waiting up to ``wait`` seconds for some."""
        try:
            read = self._client.xreadgroup(
                inflight.group,
                self._consumer,
                {inflight.stream: ">"},
                count=count,
                block=max(1, round(wait * 1000)),
            )
            async with asyncio.timeout(wait + 10.0):
                reply: list[tuple[bytes, list[Entry]]] = await cast(Awaitable[Any], read)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise broker_error(exc, f"reading {inflight.group}") from exc
            log.warning(
                "queue %s vanished from redis (restarted without persistence?); "
                "declaring it again — what it held is lost",
                inflight.group,
            )
            await self._redeclare(subscription)
            return []
        except (RedisError, OSError, TimeoutError) as exc:
            raise broker_error(exc, f"reading {inflight.group}") from exc
        return [entry for _, entries in reply for entry in entries]

    async def claim(
        self, inflight: Inflight, cursor: bytes, count: int
    ) -> tuple[bytes, list[tuple[bytes, dict[bytes, bytes], int]]]:
        """Take over entries idle longer than the lease, and entries this consumer owns
        but no live delivery holds (a read cut short), with their delivery counts.
        Returns the ``XAUTOCLAIM`` cursor to continue from (``0-0``: sweep done)."""
        try:
            entries: list[Entry] = []
            if cursor == START:
                entries = await self._claim_orphans(inflight, count)
            if len(entries) < count:
                reply = await self._client.xautoclaim(
                    inflight.stream,
                    inflight.group,
                    self._consumer,
                    self._lease_ms,
                    cursor,
                    count=count - len(entries),
                )
                cursor = reply[0]
                entries += [(i, f) for i, f in reply[1] if f is not None]
            if not entries:
                return cursor, []
            async with self._client.pipeline(transaction=False) as pipe:
                for entry_id, _ in entries:
                    pipe.xpending_range(inflight.stream, inflight.group, entry_id, entry_id, 1)
                counts = await pipe.execute()
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                return START, []
            raise broker_error(exc, f"claiming from {inflight.group}") from exc
        except (RedisError, OSError) as exc:
            raise broker_error(exc, f"claiming from {inflight.group}") from exc
        log.info("claimed %d abandoned deliveries of %s", len(entries), inflight.group)
        return cursor, [
            (entry_id, fields, int(pending[0]["times_delivered"]) if pending else 1)
            for (entry_id, fields), pending in zip(entries, counts, strict=True)
        ]

    async def _claim_orphans(self, inflight: Inflight, count: int) -> list[Entry]:
        pending: list[dict[str, Any]] = await self._client.xpending_range(
            inflight.stream,
            inflight.group,
            "-",
            "+",
            count + len(inflight.ids),
            consumername=self._consumer,
        )
        orphans = [p["message_id"] for p in pending if p["message_id"] not in inflight.ids]
        if not orphans:
            return []
        claimed: list[tuple[bytes, dict[bytes, bytes] | None]] = cast(
            Any,
            await self._client.xclaim(
                inflight.stream, inflight.group, self._consumer, 0, orphans[:count]
            ),
        )
        return [(i, f) for i, f in claimed if f is not None]

    async def delivery(
        self,
        subscription: Subscription,
        inflight: Inflight,
        window: Window,
        entry: Entry,
        delivered: int,
    ) -> RedisDelivery | None:
        """The entry as a delivery; an undecodable one is dead-lettered instead (None)."""
        entry_id, fields = entry
        try:
            message, previous = decode_fields(fields)
        except DecodeError as exc:
            log.error(
                "dead-lettering undecodable entry %r of %s: %s", entry_id, inflight.group, exc
            )
            reason = DeadLetterReason(subscription.queue, "DecodeError", str(exc), delivered)
            await self._settler.dead_letter(inflight, entry_id, subscription.service, reason)
            return None
        return RedisDelivery(
            message,
            subscription,
            previous + delivered,
            settler=self._settler,
            inflight=inflight,
            window=window,
            entry_id=entry_id,
            delivered=delivered,
        )


class Housekeeper:
    """Moves due retries back to their queues and renews held deliveries' leases."""

    def __init__(
        self,
        client: Redis,
        delayed_key: str,
        consumer: str,
        lease: float,
        inflight: dict[str, Inflight],
    ) -> None:
        self._delayed_key = delayed_key
        self._consumer = consumer
        self._lease = lease
        self._inflight = inflight
        self._move = client.register_script(MOVE_DUE)
        self._renew = client.register_script(RENEW)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False

    def wake(self) -> None:
        """Look for due retries now (one was just scheduled)."""
        self._wake.set()

    def start(self) -> None:
        if not self._tasks:
            self._running = True
            self._tasks = [
                asyncio.create_task(self._move_due(), name="herald:redis:delayed"),
                asyncio.create_task(self._renew_leases(), name="herald:redis:renew"),
            ]

    async def stop(self) -> None:
        self._running = False
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        self._wake.set()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _move_due(self) -> None:
        while self._running:
            self._wake.clear()
            wait = MOVER_POLL
            try:
                moved, dropped, wait_ms = await self._move(
                    keys=[self._delayed_key], args=[MOVE_BATCH]
                )
                if dropped:
                    log.warning("%d due retries dropped: their queue no longer exists", dropped)
                if moved + dropped >= MOVE_BATCH:
                    continue
                if wait_ms >= 0:
                    wait = min(MOVER_POLL, wait_ms / 1000)
            except (RedisError, OSError) as exc:
                log.debug("moving due retries failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _renew_leases(self) -> None:
        while self._running:
            await asyncio.sleep(self._lease / 3)
            for inflight in list(self._inflight.values()):
                if not inflight.ids:
                    continue
                try:
                    await self._renew(
                        keys=[inflight.stream],
                        args=[inflight.group, self._consumer, *inflight.ids],
                    )
                except (RedisError, OSError) as exc:
                    log.debug("renewing leases on %s failed: %s", inflight.group, exc)
