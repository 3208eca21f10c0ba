"""``sqlite:///path/to/file.db`` — the embedded default broker: durable, multi-process.

One SQLite file (WAL mode) is the whole broker; any number of processes on the host
publish and consume through it. ``sqlite:///var/herald.db`` is ``./var/herald.db``
relative to the working directory, ``sqlite:////srv/herald.db`` an absolute path;
missing directories are created.

Each declared queue gets its own copy of every matching message published after the
declaration, in publish order. Deliveries are leased to the consuming process and
deleted on ack. A consumer that dies loses nothing: its leases go back when its pid
is gone from the host (noticed at once through a pidfd) or when its heartbeat —
renewed every ``lease / 3`` seconds by its event loop — is older than ``lease``
seconds (another host, or a process whose loop hangs). Consumers sleep until a
commit in any process wakes them through a Unix datagram socket; a timer covers
delayed retries and a slow safety poll covers other hosts and lost wake-ups, so an
idle consumer uses next to no CPU.

Each process-broker has one connection on one thread; concurrent operations are
group-committed (see :mod:`.sqlite_committer`), writers of all processes take turns
through ``flock`` on ``<db>.lock``, and the write-ahead log is checkpointed on a
thread of its own (:mod:`.sqlite_checkpoint`).

URL options:

``lease=30``          seconds without a heartbeat after which a consumer is dead.
``poll=1.5``          seconds between safety polls of an idle consumer.
``timeout=5``         seconds to wait for another process's write lock.
``synchronous=normal`` ``normal`` (default) commits without fsync in WAL mode: a
                      power loss or OS crash may lose the last transactions (never
                      corrupts); a crashed *process* loses nothing. ``full`` fsyncs
                      every commit, surviving power loss at a large cost in speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..broker import Broker, Delivery, Features, ProgressCallback, Subscription
from ..deadletter import DeadLetter
from ..errors import BrokerError, BrokerURLError, PublishError
from ..message import Message
from ..url import BrokerURL
from .sqlite_committer import Committer
from .sqlite_delivery import SQLiteDelivery, Window
from .sqlite_membership import Membership
from .sqlite_rows import encode_message
from .sqlite_store import Row, Store
from .sqlite_wakeup import WakeSender

__all__ = ["SQLiteBroker"]

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_REPLAY_BATCH = 500


class SQLiteBroker(Broker):
    """Queues, leases and dead letters in one SQLite file shared by processes."""

    scheme = "sqlite"
    features = Features(
        persistent=True,
        multi_process=True,
        restartable=False,
        retry_headers=True,
        counts_redelivery=True,
        max_message_bytes=MAX_MESSAGE_BYTES,
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lease: float = 30.0,
        poll: float = 1.5,
        timeout: float = 5.0,
        synchronous: str = "normal",
    ) -> None:
        self.path = Path(os.path.abspath(path))
        self.lease = lease
        self.poll = poll
        self.timeout = timeout
        self.synchronous = synchronous
        self._committer: Committer | None = None
        self._membership: Membership | None = None
        self._sender: WakeSender | None = None
        self._wakes: dict[int, asyncio.Event] = {}

    def __repr__(self) -> str:
        return f"SQLiteBroker({str(self.path)!r})"

    @classmethod
    def from_url(cls, url: BrokerURL) -> SQLiteBroker:
        url.reject_unknown({"lease", "poll", "timeout", "synchronous"})
        synchronous = url.option("synchronous", "normal").lower()
        if synchronous not in ("normal", "full"):
            raise BrokerURLError(
                str(url), "query parameter 'synchronous'", "must be 'normal' or 'full'"
            )
        return cls(
            url.path,
            lease=url.float_option("lease", 30.0, minimum=1.0),
            poll=url.float_option("poll", 1.5, minimum=0.05),
            timeout=url.float_option("timeout", 5.0),
            synchronous=synchronous,
        )

    # -- lifecycle ----------------------------------------------------------------

    async def connect(self) -> None:
        if self._committer is not None:
            return
        loop = asyncio.get_running_loop()
        self._sender = sender = WakeSender()

        def after_commit(store: Store) -> None:
            targets: dict[str, list[int]] = {}
            for qid in store.woken:
                for wake in store.wake_map.get(qid, ()):
                    targets.setdefault(wake, []).append(qid)
            sender.send(targets)
            loop.call_soon_threadsafe(self._wake_up, set(store.woken))

        committer = Committer(
            self.path,
            synchronous=self.synchronous,
            busy_timeout=self.timeout,
            after_commit=after_commit,
        )
        await committer.open()
        self._committer = committer
        self._wakes.clear()
        self._membership = Membership(
            committer, self.path, lease=self.lease, poll=self.poll, on_wake=self._wake_up
        )

    async def close(self) -> None:
        committer, self._committer = self._committer, None
        if committer is None:
            return
        self._wake_up(None)
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
        await self._run(lambda s: s.destroy())

    def _wake_up(self, qids: set[int] | None) -> None:
        """Wake the consume loops of these queues (``None``: all of them)."""
        for qid in list(self._wakes) if qids is None else qids:
            wake = self._wakes.get(qid)
            if wake is not None:
                self._wakes[qid] = asyncio.Event()
                wake.set()

    def _open(self) -> Committer:
        if self._committer is None:
            raise BrokerError(f"SQLite broker {self.path} is not connected")
        return self._committer

    async def _run(self, operation: Callable[[Store], Any]) -> Any:
        return await self._open().run(operation)

    # -- publishing and queues ----------------------------------------------------

    async def publish(self, messages: Sequence[Message]) -> None:
        encoded = []
        for message in messages:
            if len(message.body) > MAX_MESSAGE_BYTES:
                raise PublishError(
                    f"message {message.id} is {len(message.body)} bytes; "
                    f"the SQLite broker takes at most {MAX_MESSAGE_BYTES}"
                )
            encoded.append(encode_message(message))
        if not encoded:
            return
        try:
            await self._run(lambda s: s.publish(encoded))
        except PublishError:
            raise
        except BrokerError as exc:
            raise PublishError(str(exc)) from exc

    async def declare(self, subscription: Subscription) -> None:
        await self._declare(subscription)

    async def _declare(self, subscription: Subscription) -> int:
        owner = None
        if not subscription.durable:
            membership = self._membership
            if membership is None:
                raise BrokerError(f"SQLite broker {self.path} is not connected")
            owner = await membership.join()
        queue, service, patterns = (
            subscription.queue,
            subscription.service,
            subscription.patterns,
        )
        qid: int = await self._run(lambda s: s.declare(queue, service, patterns, owner))
        return qid

    # -- consuming ----------------------------------------------------------------

    async def consume(
        self, subscription: Subscription, prefetch: int
    ) -> AsyncGenerator[Delivery, None]:
        committer, membership = self._open(), self._membership
        assert membership is not None
        me = await membership.join()
        qid = await self._declare(subscription)
        await membership.consuming(qid)
        window = Window(max(1, prefetch))
        buffer: deque[Row] = deque()
        idle: asyncio.Event | None = None
        due = 0.0
        try:
            while True:
                if buffer:
                    yield SQLiteDelivery(self._run, buffer.popleft(), subscription, me, window)
                    continue
                if idle is not None:
                    # The last claim emptied the queue: sleep until a commit anywhere
                    # wakes us, the next delayed delivery falls due, or the safety poll.
                    delay = min(self.poll, max(0.0, due - time.time()))
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await idle.wait()
                await window.room()
                if self._committer is not committer:
                    raise BrokerError(f"SQLite broker {self.path} is closed")
                wake = self._wakes.setdefault(qid, asyncio.Event())
                want = window.free
                claim = committer.submit(
                    functools.partial(_claim, qid=qid, consumer=me, limit=want)
                )
                try:
                    rows, due = await asyncio.shield(claim)
                except asyncio.CancelledError:
                    claim.add_done_callback(functools.partial(_orphaned, committer, me))
                    raise
                if rows and self._committer is not committer:
                    await _give_back(committer, rows, me)
                    raise BrokerError(f"SQLite broker {self.path} is closed")
                window.used += len(rows)
                buffer.extend(rows)
                idle = wake if len(rows) < want else None
        finally:
            with contextlib.suppress(BrokerError):
                if buffer:
                    await _give_back(committer, buffer, me)
                await membership.stopped(qid)
                if not subscription.durable:
                    await committer.run(lambda s: s.drop_queues([qid]))

    # -- dead letters -------------------------------------------------------------

    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        letters: list[DeadLetter] = await self._run(lambda s: s.dead_letters(service, limit))
        return letters

    async def _dead_seqs(self, service: str, ids: Collection[str] | None) -> list[int]:
        wanted = None if ids is None else list(ids)
        seqs: list[int] = await self._run(lambda s: s.dead_letter_seqs(service, wanted))
        return seqs

    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        seqs = await self._dead_seqs(service, ids)
        done = 0
        for start in range(0, len(seqs), _REPLAY_BATCH):
            batch = seqs[start : start + _REPLAY_BATCH]
            done += await self._replay(batch)
            if progress:
                progress(done, len(seqs))
        return done

    async def _replay(self, seqs: list[int]) -> int:
        replayed: int = await self._run(lambda s: s.replay(seqs))
        return replayed

    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        seqs = await self._dead_seqs(service, ids)
        purged: int = await self._run(lambda s: s.purge(seqs))
        return purged


async def _give_back(committer: Committer, rows: Iterable[Row], me: int) -> None:
    seqs = [row.seq for row in rows]
    await committer.run(lambda s: s.release(seqs, me))


def _orphaned(
    committer: Committer, me: int, claim: asyncio.Future[tuple[list[Row], float]]
) -> None:
    """Give back what a claim leased after its consumer was cancelled."""
    if claim.cancelled() or claim.exception() is not None or not claim.result()[0]:
        return
    seqs = [row.seq for row in claim.result()[0]]
    with contextlib.suppress(BrokerError):
        released = committer.submit(lambda s: s.release(seqs, me))
        released.add_done_callback(lambda f: f.cancelled() or f.exception())


def _claim(store: Store, qid: int, consumer: int, limit: int) -> tuple[list[Row], float]:
    return store.claim(qid, consumer, limit, time.time())
