"""The consume loop: claim what the prefetch window has room for, sleep until woken.

A consume loop leases due deliveries in publish order, as many as its window has
room for (messages and bytes), and hands them out one by one, decoding each row as
it goes. When the queue is empty it sleeps until a commit in any process wakes it
(a datagram from another process, a callback from this one), the next delayed retry
falls due, or the safety poll, so an idle consumer uses next to no CPU.

A loop of an exclusive subscription claims only while it holds the queue (checked
in the transaction of each claim, :meth:`~.store.Store.hold`). Otherwise it stands
by: it sleeps until a holder letting go wakes it (a datagram, a callback, or the
safety poll) and tries again. When it stops it lets go, and hands back what it had
claimed and not yet handed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Iterable

from ...broker import Delivery, Prefetch, Subscription
from ...errors import BrokerError
from ...window import Window
from .connection import Committer
from .delivery import Holder, SQLiteDelivery
from .membership import Membership
from .store import Claimed, Store
from .wire import decode_row

__all__ = ["Wakes", "consume_queue"]


class Wakes:
    """The wake-up events of this broker's consume loops, by queue id."""

    def __init__(self) -> None:
        self._events: dict[int, asyncio.Event] = {}

    def event(self, qid: int) -> asyncio.Event:
        return self._events.setdefault(qid, asyncio.Event())

    def wake(self, qids: Iterable[int] | None) -> None:
        """Wake the loops of these queues (``None``: all of them)."""
        for qid in list(self._events) if qids is None else qids:
            event = self._events.get(qid)
            if event is not None:
                self._events[qid] = asyncio.Event()
                event.set()

    def clear(self) -> None:
        self._events.clear()


async def consume_queue(
    connected: Callable[[], tuple[Committer, Membership]],
    wakes: Wakes,
    declare: Callable[[Subscription], Awaitable[int]],
    subscription: Subscription,
    prefetch: Prefetch,
) -> AsyncGenerator[Delivery, None]:
    """Deliveries of ``subscription``'s queue, at most ``prefetch`` unsettled."""
    committer, membership = connected()
    me = await membership.join()
    qid = await declare(subscription)
    turn = membership.new_turn() if subscription.exclusive else None
    holding, waiting = turn is None, False
    try:
        await membership.consuming(qid, standby=not holding)
    except BaseException:
        if turn is not None:
            membership.end_turn(turn)
        raise
    poll, lease = committer.settings.poll, committer.settings.lease
    window = Window(prefetch)
    holder = Holder(committer, membership, me, window)
    buffer: deque[Claimed] = deque()
    idle: asyncio.Event | None = None
    due = 0.0
    doing = f"claiming deliveries from {subscription.queue}"
    try:
        while True:
            if buffer:
                claimed = buffer.popleft()
                row = decode_row(claimed.seq, claimed.attempt, claimed.values)
                yield SQLiteDelivery(row, subscription, holder, claimed.size)
                continue
            if idle is not None:
                # The last claim emptied the queue: sleep until a commit anywhere
                # wakes us, the next delayed delivery falls due, or the safety poll.
                delay = min(poll, max(0.0, due - time.time()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await idle.wait()
            await window.room()
            if committer.closed:
                raise BrokerError(f"the SQLite broker {committer.path} is closed")
            wake, freed = wakes.event(qid), wakes.event(-qid)
            claim = committer.submit(
                functools.partial(
                    _claim,
                    qid=qid,
                    consumer=me,
                    limit=window.free,
                    budget=prefetch.bytes - window.bytes,
                    lease=lease,
                    turn=turn,
                    turns=frozenset(membership.turns),
                ),
                doing,
            )
            try:
                claimed_or_not = await asyncio.shield(claim)
            except asyncio.CancelledError:
                claim.add_done_callback(functools.partial(_orphaned, committer, me))
                raise
            if claimed_or_not is None:  # another consumer holds the queue: stand by
                if not waiting:  # watch the holder's pid, if it runs on this host
                    waiting = True
                    membership.check_soon()
                if holding:
                    holding = False
                    await membership.lost_turn(qid)
                idle = freed
                due = float("inf")
                continue
            rows, due = claimed_or_not
            waiting = False
            for claimed in rows:
                holder.took(claimed.seq, claimed.size)
            buffer.extend(rows)
            if not holding:
                holding = True
                # publishers wake us from now on; claim once more for what they
                # published before they knew
                await membership.took_turn(qid)
                due = 0.0
            if rows and committer.closed:
                raise BrokerError(f"the SQLite broker {committer.path} is closed")
            idle = wake if due > time.time() else None
    finally:
        if turn is not None:
            membership.end_turn(turn)
        with contextlib.suppress(BrokerError):
            try:
                if buffer or turn is not None:
                    await _give_back(committer, buffer, me, qid, turn)
            finally:
                for claimed in buffer:
                    holder.gave_back(claimed.seq, claimed.size)
                await membership.stopped(qid, standby=not holding)
                if not subscription.durable:
                    await committer.run(lambda s: s.drop_queues([qid]), "dropping a queue")


def _claim(
    store: Store,
    qid: int,
    consumer: int,
    limit: int,
    budget: int,
    lease: float,
    turn: int | None,
    turns: Collection[int],
) -> tuple[list[Claimed], float] | None:
    """Lease what is due; ``None`` if another consumer holds the exclusive queue."""
    now = time.time()
    if turn is not None and not store.hold(qid, consumer, turn, turns, now):
        return None
    return store.claim(qid, consumer, limit, budget, now, now + lease)


async def _give_back(
    committer: Committer, rows: Iterable[Claimed], me: int, qid: int, turn: int | None
) -> None:
    """Give back what was claimed and not handed out, then let go of the queue."""
    leases = [(row.seq, row.attempt) for row in rows]

    def operation(store: Store) -> None:
        now = time.time()
        if leases:
            store.release(leases, me, now)
        if turn is not None:
            store.let_go(qid, me, turn)

    await committer.run(operation, "giving deliveries back")


def _orphaned(
    committer: Committer, me: int, claim: asyncio.Future[tuple[list[Claimed], float] | None]
) -> None:
    """Give back what a claim leased after its consumer was cancelled (if that fails
    too, the leases, never renewed, run out)."""
    if claim.cancelled() or claim.exception() is not None:
        return
    outcome = claim.result()
    if outcome is None or not outcome[0]:
        return
    leases = [(row.seq, row.attempt) for row in outcome[0]]
    with contextlib.suppress(BrokerError):
        released = committer.submit(
            lambda s: s.release(leases, me, time.time()), "giving deliveries back"
        )
        released.add_done_callback(lambda f: f.cancelled() or f.exception())
