"""A broker's two background loops: the heartbeat and the mover of due retries.

The heartbeat runs every ``lease/3``. For each consumer of this broker it records the
consumer as alive for another lease (a sorted set per queue, scored by expiry, which
is what queue inspection counts), and resets the idle time of every entry the
consumer still holds unsettled. ``XAUTOCLAIM`` takes only entries idle for a whole
lease, so a delivery stays with its consumer for as long as the process lives, however
long its handler runs; once the process dies (or stops renewing an entry whose
settlement failed), the entry is claimed by another consumer a lease later. The
consumer holding an exclusive queue's lock has it extended for another lease by the
same script, as long as the lock still names it; when it does not (the heartbeat came
more than a lease late and a standby took over) the consumer stands by again. A holder
that stopped keeps the lock, renewed, until it has settled what it handed out (see
:meth:`.Settler.hand_over`): its successor then starts exactly where it stopped.

The mover puts due retries (and scheduled messages, :meth:`.RedisBroker._publish_later`)
from each consumed queue's delayed set back on the queue.
It wakes at the next due time it knows of, when this process schedules a retry, and
at least every :data:`MOVER_POLL` seconds (for retries scheduled by other processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio import Redis

from ...errors import ErrorTable
from . import scripts
from .delivery import Holder
from .settings import RedisSettings
from .topology import Keys

__all__ = ["MOVER_POLL", "Housekeeper"]

log = logging.getLogger("herald.brokers.redis")
MOVER_POLL = 1.0
MOVE_BATCH = 200


class Housekeeper:
    """Keeps a broker's consumers alive and their held entries theirs; moves due retries."""

    def __init__(
        self, client: Redis, keys: Keys, settings: RedisSettings, table: ErrorTable
    ) -> None:
        self._client = client
        self._keys = keys
        self._settings = settings
        self._table = table
        self._renew = client.register_script(scripts.RENEW)
        self._close = client.register_script(scripts.CLOSE)
        self._move = client.register_script(scripts.MOVE_DUE)
        self._holders: set[Holder] = set()
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._beating = asyncio.Lock()
        """Held by a heartbeat in flight: a consumer that stops waits for it, so that
        no renewal sent before it stopped lands after it left (and revives it)."""
        self._tasks: list[asyncio.Task[None]] = []

    async def attach(self, holder: Holder) -> None:
        """Start keeping ``holder`` alive: it counts as a consumer from now on."""
        self._holders.add(holder)
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._heartbeat(), name="herald:redis:heartbeat"),
                asyncio.create_task(self._move_due(), name="herald:redis:delayed"),
            ]
        with self._table.converting(f"joining {holder.queue}"):
            await self._renew_one(holder, self._client)

    async def detach(self, holder: Holder, *, everything: bool = False) -> None:
        """``holder`` stopped consuming: it is no longer alive; what it read but never
        handed out is released. What it still holds stays renewed until settled, and
        so does an exclusive queue's lock, unless ``everything`` (the broker closes):
        then what it held is left to be claimed at once, and the lock goes."""
        holder.open = False
        keys = [holder.stream, self._keys.consumers(holder.queue)]
        if everything or not holder.held:
            self._holders.discard(holder)
            if holder.lock is not None and holder.handoff is not None:
                holder.locked = False
                keys += [holder.lock, holder.handoff]
        try:
            async with self._beating:
                args: list[Any] = [holder.group, holder.name, self._settings.lease_ms]
                args += ["all" if everything else "unheld", *holder.held]
                with self._table.converting(f"leaving {holder.queue}"):
                    await self._close(keys=keys, args=args)
        except Exception as exc:  # its entries come back after the lease anyway
            log.debug("leaving %s cleanly failed: %s", holder.queue, exc)

    async def close(self) -> None:
        """Stop both loops and let go of every consumer (the broker closes)."""
        tasks, self._tasks = self._tasks, []
        # The loops see the flag at once; a cancellation alone can be swallowed by a
        # driver call it lands in (the task then loops on, "cancelling" for ever).
        self._closing.set()
        self._wake.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
        for holder in list(self._holders):
            await self.detach(holder, everything=True)

    def wake(self, queue: str) -> None:
        """Look for due retries now (one was just scheduled on ``queue``)."""
        self._wake.set()

    async def _renew_one(self, holder: Holder, client: Any) -> Any:
        keys = [holder.stream, self._keys.consumers(holder.queue)]
        if holder.locked and holder.lock is not None:
            keys.append(holder.lock)
        args: list[Any] = [holder.group, holder.name, self._settings.lease_ms, int(holder.open)]
        return await self._renew(keys=keys, args=[*args, *holder.held], client=client)

    async def _heartbeat(self) -> None:
        while not await _waited(self._closing, self._settings.lease / 3):
            async with self._beating:
                holders = [h for h in self._holders if h.open or h.held]
                self._holders.intersection_update(holders)
                if not holders:
                    continue
                locking = [h.locked for h in holders]
                try:
                    with self._table.converting("renewing leases"):
                        async with self._client.pipeline(transaction=False) as pipe:
                            for holder in holders:
                                await self._renew_one(holder, pipe)
                            results = await pipe.execute()
                except Exception as exc:
                    log.warning("renewing the leases of %d consumers failed: %s", len(holders), exc)
                    continue
                for holder, locked, (_, still) in zip(holders, locking, results, strict=True):
                    if locked and not still and holder.locked:
                        log.warning("queue %s: the exclusive lock was lost", holder.queue)
                        holder.locked = False

    async def _move_due(self) -> None:
        while not self._closing.is_set():
            self._wake.clear()
            wait = MOVER_POLL
            queues = sorted({h.queue for h in self._holders})
            try:
                with self._table.converting("moving due retries"):
                    async with self._client.pipeline(transaction=False) as pipe:
                        for queue in queues:
                            keys = [self._keys.delayed(queue), self._keys.queue(queue)]
                            await self._move(keys=keys, args=[MOVE_BATCH], client=pipe)
                        results = await pipe.execute() if queues else []
                busy = False
                for queue, (moved, dropped, wait_ms) in zip(queues, results, strict=True):
                    if dropped:
                        log.warning("%d due retries dropped: queue %s is gone", dropped, queue)
                    busy = busy or moved + dropped >= MOVE_BATCH
                    if wait_ms >= 0:
                        wait = min(wait, wait_ms / 1000)
                if busy:
                    continue
            except Exception as exc:
                log.debug("moving due retries failed: %s", exc)
            await _waited(self._wake, wait)


async def _waited(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; whether it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
