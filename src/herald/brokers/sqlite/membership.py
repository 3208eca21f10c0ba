"""Consumer membership: who holds leases, renewing them, reclaiming them from the dead.

A broker that consumes registers once (pid, host, wake-up socket) and heartbeats
every ``lease / 3`` seconds; with each heartbeat it renews the lease of every row it
still holds unsettled (:meth:`Membership.hold`, :meth:`Membership.let_go`), so a
delivery stays with a live consumer for as long as its handler takes. As often (at
most every ``poll`` seconds), and at once when a watched process exits, it checks the
others: a consumer whose pid is gone from this host, or whose heartbeat is older than
``lease`` (another host, or a hung process), is forgotten — its leased deliveries go
back to their queues (the attempt counts), the exclusive queues it held are free and
its transient queues are dropped. Rows whose own lease ran out go back too: those
whose settlement failed, whose holder hangs, or whose holder is unknown.

The consumer row lists the queues the broker's consume loops take from, and those
they stand by for (exclusive queues another consumer holds), so that publishers wake
the first and a holder letting go wakes the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable

from ...errors import BrokerError
from ...tasks import cancel_and_wait
from .connection import Committer
from .store import Store
from .wakeup import ExitWatcher, WakeSocket, process_alive

__all__ = ["Membership"]

log = logging.getLogger("herald.brokers.sqlite")


class Membership:
    """This broker's consumer row, its wake-up socket, its leases and the watch on
    the others."""

    def __init__(self, committer: Committer, *, on_wake: Callable[[set[int] | None], None]) -> None:
        self._committer = committer
        settings = committer.settings
        self._path = settings.path
        self.lease = settings.lease
        self._interval = min(settings.poll, settings.lease / 3)
        self._on_wake = on_wake
        self._joining: asyncio.Lock = asyncio.Lock()
        self._id: int | None = None
        self._socket: WakeSocket | None = None
        self._watcher: ExitWatcher | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_beat = 0.0
        self._check_now = asyncio.Event()
        self._queues: Counter[int] = Counter()
        self._standing: Counter[int] = Counter()
        self._listing: str | None = ""
        """The ``queues`` column as last written (``None``: unknown)."""
        self._held: set[int] = set()
        self._turn = itertools.count(1)
        self.turns: set[int] = set()
        """The running consume loops of exclusive queues (their ``turn`` tokens)."""

    async def join(self) -> int:
        """Register (once) and start watching; return this broker's consumer id."""
        async with self._joining:
            if self._id is not None:
                return self._id
            sock = WakeSocket(self._path, self._on_wake)
            wake, pid = sock.address, os.getpid()
            try:
                self._id = await self._committer.run(
                    lambda s: s.register(pid, wake, time.time()), "registering a consumer"
                )
            except BaseException:
                sock.close()
                raise
            self._socket = sock
            self._last_beat = time.time()
            self._watcher = ExitWatcher(self._check_now.set)
            with contextlib.suppress(BrokerError):
                await self.check()
            self._task = asyncio.create_task(self._run(), name="herald-sqlite-membership")
            return self._id

    def hold(self, seq: int) -> None:
        """A row was leased to this consumer: renew its lease until :meth:`let_go`."""
        self._held.add(seq)

    def let_go(self, seq: int) -> None:
        """The row was settled, or its settlement failed: stop renewing its lease."""
        self._held.discard(seq)

    def new_turn(self) -> int:
        """A token for a consume loop of an exclusive queue, running until :meth:`end_turn`."""
        turn = next(self._turn)
        self.turns.add(turn)
        return turn

    def end_turn(self, turn: int) -> None:
        self.turns.discard(turn)

    async def consuming(self, qid: int, *, standby: bool = False) -> None:
        """Note that a consume loop takes from queue ``qid`` (wake me for its
        deliveries), or stands by for it (wake me when its holder lets go)."""
        (self._standing if standby else self._queues)[qid] += 1
        await self._publish_queues()

    async def stopped(self, qid: int, *, standby: bool = False) -> None:
        counter = self._standing if standby else self._queues
        counter[qid] -= 1
        if counter[qid] <= 0:
            del counter[qid]
        await self._publish_queues()

    async def took_turn(self, qid: int) -> None:
        """A loop standing by for ``qid`` now holds it."""
        self._standing[qid] -= 1
        self._queues[qid] += 1
        await self._publish_queues()

    async def lost_turn(self, qid: int) -> None:
        """A loop that held ``qid`` found another consumer holding it."""
        self._queues[qid] -= 1
        self._standing[qid] += 1
        await self._publish_queues()

    def check_soon(self) -> None:
        """Check the others now: a loop that stands by watches its holder's pid."""
        self._check_now.set()

    def _listed(self) -> str:
        taking = {qid for qid, n in self._queues.items() if n > 0}
        standing = {qid for qid, n in self._standing.items() if n > 0} - taking
        return " ".join([*map(str, sorted(taking)), *(f"~{qid}" for qid in sorted(standing))])

    async def _publish_queues(self) -> None:
        me, listing = self._id, self._listed()
        if me is None or listing == self._listing:
            return
        self._listing = listing
        try:
            await self._committer.run(lambda s: s.set_queues(me, listing), "recording queues")
        except BaseException:
            self._listing = None
            raise

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._check_now.wait()
            self._check_now.clear()
            try:
                await self.check()
            except BrokerError as exc:  # the file is busy or gone; the next round tries again
                log.debug("membership check of %s failed: %s", self._path, exc)
            except Exception:  # never stop heartbeating: leases would run out
                log.exception("membership check of %s failed", self._path)

    async def check(self) -> None:
        """Heartbeat and renew if due, forget the consumers that died, and make rows
        with expired leases ready again."""
        me = self._id
        assert me is not None and self._socket is not None
        wake, pid, lease = self._socket.address, os.getpid(), self.lease
        held = sorted(self._held)
        turns, listing = frozenset(self.turns), self._listed()
        rewrite = self._listing is None  # writing it failed: write it now

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
                    store.register(pid, wake, now, cid=me, queues=listing)
                store.renew(me, held, now + lease)
                self._last_beat = now
            if rewrite:
                store.set_queues(me, listing)
            local: list[int] = []
            for other in store.consumers():
                if other.id == me:
                    continue
                here = other.host == store.host
                if other.heartbeat < now - lease or (here and not process_alive(other.pid)):
                    store.forget_consumer(other.id, now, crashed=True)
                elif here and other.pid != pid:
                    local.append(other.pid)
            store.sweep_expired(now)
            store.tidy_holds(me, turns)
            return local

        pids = await self._committer.run(operation, "checking consumers")
        if rewrite and self._listing is None:
            self._listing = listing
        if self._watcher is not None:
            self._watcher.watch(pids)

    async def leave(self) -> None:
        """Give back every lease uncounted, drop owned transient queues, unregister."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        me, self._id = self._id, None
        self._held.clear()
        try:
            if me is not None:
                await self._committer.run(
                    lambda s: s.forget_consumer(me, time.time(), crashed=False), "unregistering"
                )
        finally:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
