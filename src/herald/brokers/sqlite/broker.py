"""``sqlite:///path/to/file.db`` — the embedded default broker: durable, multi-process.

One SQLite file (WAL mode) is the whole broker; any number of processes on the host
publish and consume through it. Missing directories are created. Options:
:class:`~herald.brokers.sqlite.settings.SQLiteSettings`.

Each declared queue gets its own copy of every matching message published after the
declaration, in publish order. A delivery is leased to the consuming process for
``lease`` seconds, renewed with its heartbeat (every ``lease / 3`` seconds) for as
long as it holds the delivery unsettled, and deleted on ack. A consumer that dies
loses nothing: its leases go back when its pid is gone from the host (noticed at once
through a pidfd) or when its heartbeat is older than ``lease`` (another host, or a
process whose loop hangs); a lease that is not renewed (its settlement failed) runs
out and goes back alone. Consumers sleep until a commit in any process wakes them
through a Unix datagram socket (:mod:`.wakeup`). An exclusive subscription is taken
by one consume loop at a time; the others stand by until it lets go or is taken for
dead (:mod:`.consumer`, :meth:`.store.Store.hold`).

Each process-broker has one connection on one thread; concurrent operations are
group-committed, writers of all processes take turns through ``flock`` on
``<db>.lock`` (:mod:`.connection`, :mod:`.lock`), and checkpoints, vacuuming and the
pruning of old dead letters run on a thread of their own (:mod:`.maintenance`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Self, TypeVar

from ...broker import Broker, Delivery, Features, Prefetch, Subscription
from ...errors import BrokerError, CapabilityError, HeraldError, PublishError
from ...message import Message
from ...schedule import due_of
from .connection import Committer
from .consumer import Wakes, consume_queue
from .deadletters import DeadLetters
from .history import NOT_RETAINED, STEP, backfill_step
from .inspection import Inspection
from .membership import Membership
from .settings import SQLiteSettings
from .store import Store
from .wakeup import WakeSender
from .wire import encode_message

__all__ = ["SQLiteBroker"]

T = TypeVar("T")
MiB = 1024 * 1024


class SQLiteBroker(DeadLetters, Inspection, Broker):
    """Queues, leases and dead letters in one SQLite file shared by processes.

    Implements :class:`herald.DeadLetterAdmin`, :class:`herald.QueueInspection` and
    :class:`herald.RetainedHistory` (once a URL with ``retain=`` opened the file,
    every published message is also kept that long, once, for queues created later).
    """

    schemes = ("sqlite",)
    features = Features(
        persistent=True,
        multi_process=True,
        retry_headers=True,
        counts_redelivery=True,
        release_counts_attempt=False,
        max_message_bytes=16 * MiB,
        native_schedule=True,
    )

    def __init__(self, settings: SQLiteSettings | str | os.PathLike[str]) -> None:
        if not isinstance(settings, SQLiteSettings):
            settings = SQLiteSettings(Path(settings))
        self.settings = settings
        self._committer: Committer | None = None
        self._membership: Membership | None = None
        self._sender: WakeSender | None = None
        self._wakes = Wakes()
        self.history_step = STEP
        """History rows one backfill transaction reads (see :mod:`.history`)."""

    def __repr__(self) -> str:
        return f"SQLiteBroker({str(self.path)!r})"

    @property
    def path(self) -> Path:
        return self.settings.path

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(SQLiteSettings.from_url(url))

    # -- lifecycle ----------------------------------------------------------------

    async def connect(self) -> None:
        if self._committer is not None:
            return
        loop = asyncio.get_running_loop()
        self._sender = sender = WakeSender()
        wakes = self._wakes

        def after_commit(store: Store) -> None:
            # a queue id names new deliveries; its negation, that its holder let go
            targets: dict[str, list[int]] = {}
            routes = store.routes
            for qid in store.woken:
                for wake in routes.wake_map.get(qid, ()):
                    targets.setdefault(wake, []).append(qid)
            for qid in store.freed:
                for wake in routes.standby_map.get(qid, ()):
                    targets.setdefault(wake, []).append(-qid)
            sender.send(targets)
            woken = {*store.woken, *(-qid for qid in store.freed)}
            loop.call_soon_threadsafe(wakes.wake, woken)

        committer = Committer(self.settings, after_commit)
        try:
            await committer.open()
        except BaseException:
            sender.close()
            self._sender = None
            raise
        self._committer = committer
        self._wakes.clear()
        self._membership = Membership(committer, on_wake=self._wakes.wake)

    async def close(self) -> None:
        committer, self._committer = self._committer, None
        if committer is None:
            return
        self._wakes.wake(None)
        membership, self._membership = self._membership, None
        try:
            if membership is not None:
                with contextlib.suppress(BrokerError):
                    await membership.leave()
        finally:
            await committer.close()
            if self._sender is not None:
                self._sender.close()
                self._sender = None

    async def destroy(self) -> None:
        await self._run(lambda s: s.destroy(), "destroying the broker's queues")

    def _open(self) -> Committer:
        if self._committer is None:
            raise BrokerError(f"the SQLite broker {self.path} is not connected")
        return self._committer

    async def _run(
        self, operation: Callable[[Store], T], doing: str, as_: type[HeraldError] | None = None
    ) -> T:
        return await self._open().run(operation, doing, as_)

    # -- publishing and queues ----------------------------------------------------

    async def _publish(self, messages: Sequence[Message]) -> None:
        encoded = [encode_message(message) for message in messages]
        await self._run(
            lambda s: s.publish(encoded, time.time()),
            f"publishing {len(encoded)} message(s) to {self.path}",
            PublishError,
        )

    async def _publish_later(self, messages: Sequence[Message]) -> None:
        """A row per bound queue, as for a publish, with its ``due`` time: the queues
        bound when publishing get it, and consumers claim it once due (the one that
        falls due first wakes a sleeping consumer, as a delayed retry does)."""
        encoded = [(due_of(message) or 0.0, encode_message(message)) for message in messages]
        await self._run(
            lambda s: s.publish_later(encoded),
            f"scheduling {len(encoded)} message(s) in {self.path}",
            PublishError,
        )

    async def declare(self, subscription: Subscription) -> None:
        await self._declare(subscription)

    async def _declare(self, subscription: Subscription) -> int:
        owner = None
        if not subscription.durable:
            membership = self._membership
            if membership is None:
                raise BrokerError(f"the SQLite broker {self.path} is not connected")
            owner = await membership.join()
        name, service, patterns = subscription.queue, subscription.service, subscription.patterns
        qid: int = await self._run(
            lambda s: s.declare(name, service, patterns, owner), f"declaring queue {name}"
        )
        return qid

    async def backfill(self, subscription: Subscription, since: datetime | None = None) -> int:
        """Create the queue with the retained history it missed, a step at a time
        (see :mod:`.history`); needs a file that retains (``retain=``)."""
        name, service, patterns = subscription.queue, subscription.service, subscription.patterns
        start = since.timestamp() if since is not None else 0.0
        total, done = 0, False
        while not done:
            copied, done = await self._run(
                lambda s: backfill_step(
                    s, name, service, patterns, start, time.time(), self.history_step
                ),
                f"backfilling queue {name}",
            )
            if copied == NOT_RETAINED:
                raise CapabilityError(
                    f"the SQLite broker {self.path} keeps no history to backfill {name} "
                    "from: add ?retain=7d (or another duration) to the URL of the "
                    "processes that use it"
                )
            total += copied
        return total

    def consume(
        self, subscription: Subscription, prefetch: Prefetch
    ) -> AsyncGenerator[Delivery, None]:
        return consume_queue(self._connected, self._wakes, self._declare, subscription, prefetch)

    def _connected(self) -> tuple[Committer, Membership]:
        committer, membership = self._open(), self._membership
        assert membership is not None
        return committer, membership
