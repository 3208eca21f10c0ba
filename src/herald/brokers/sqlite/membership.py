"""Consumer membership: who holds leases, and reclaiming them from the dead.

A broker that consumes registers once (pid, host, wake-up socket) and heartbeats
every ``lease / 3`` seconds. As often (at most every ``poll`` seconds), and at once
when a watched process exits, it checks the other consumers: one whose pid is gone from this host,
or whose heartbeat is older than ``lease`` (another host, or a hung process), is
forgotten — its leased deliveries go back to their queues (the attempt counts) and
its transient queues are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..errors import BrokerError
from .sqlite_committer import Committer
from .sqlite_store import Store
from .sqlite_wakeup import ExitWatcher, WakeSocket, process_alive

__all__ = ["Membership"]

log = logging.getLogger("herald.brokers.sqlite")


class Membership:
    """This broker's consumer row, its wake-up socket and the watch on the others."""

    def __init__(
        self,
        committer: Committer,
        path: Path,
        *,
        lease: float,
        poll: float,
        on_wake: Callable[[set[int] | None], None],
    ) -> None:
        self._committer = committer
        self._path = path
        self._lease = lease
        self._interval = min(poll, lease / 3)
        self._on_wake = on_wake
        self._joining: asyncio.Lock = asyncio.Lock()
        self._id: int | None = None
        self._socket: WakeSocket | None = None
        self._watcher: ExitWatcher | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_beat = 0.0
        self._check_now = asyncio.Event()
        self._queues: Counter[int] = Counter()

    async def join(self) -> int:
        """Register (once) and start watching; return this broker's consumer id."""
        async with self._joining:
            if self._id is not None:
                return self._id
            self._socket = WakeSocket(self._path, self._on_wake)
            wake, pid = self._socket.address, os.getpid()
            self._id = await self._committer.run(lambda s: s.register(pid, wake, time.time()))
            self._last_beat = time.time()
            self._watcher = ExitWatcher(self._check_now.set)
            await self.check()
            self._task = asyncio.create_task(self._run(), name="herald-sqlite-membership")
            return self._id

    async def consuming(self, qid: int) -> None:
        """Note that a consume loop takes from queue ``qid`` (wake me for it)."""
        self._queues[qid] += 1
        if self._queues[qid] == 1:
            await self._publish_queues()

    async def stopped(self, qid: int) -> None:
        self._queues[qid] -= 1
        if self._queues[qid] <= 0:
            del self._queues[qid]
            await self._publish_queues()

    async def _publish_queues(self) -> None:
        me, qids = self._id, sorted(self._queues)
        if me is not None:
            await self._committer.run(lambda s: s.set_queues(me, qids))

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._check_now.wait()
            self._check_now.clear()
            try:
                await self.check()
            except BrokerError:
                continue  # the file is busy or gone; the next round tries again

    async def check(self) -> None:
        """Heartbeat if due, and forget the consumers that died."""
        me = self._id
        assert me is not None and self._socket is not None
        wake, pid, lease = self._socket.address, os.getpid(), self._lease

        def operation(store: Store) -> list[int]:
            now = time.time()
            if now - self._last_beat >= lease / 3:
                if not store.heartbeat(me, now):
                    log.warning(
                        "consumer %d of %s was taken for dead (no heartbeat for %.0fs): its "
                        "deliveries went back and its transient queues were dropped",
                        me,
                        self._path,
                        lease,
                    )
                    store.register(pid, wake, now, cid=me, queues=sorted(self._queues))
                self._last_beat = now
            local: list[int] = []
            for other in store.consumers():
                if other.id == me:
                    continue
                here = other.host == store.host
                if other.heartbeat < now - lease or (here and not process_alive(other.pid)):
                    store.forget_consumer(other.id, crashed=True)
                elif here and other.pid != pid:
                    local.append(other.pid)
            store.sweep_orphans()
            return local

        pids = await self._committer.run(operation)
        if self._watcher is not None:
            self._watcher.watch(pids)

    async def leave(self) -> None:
        """Give back every lease uncounted, drop owned transient queues, unregister."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        me, self._id = self._id, None
        try:
            if me is not None:
                await self._committer.run(lambda s: s.forget_consumer(me, crashed=False))
        finally:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
