"""Exclusive queues: one consume loop at a time holds the queue, the others stand by.

NATS 2.9 has no single-active consumer, so the hold is an entry ``hold.<consumer>``
in the live bucket (:mod:`.state`), created only where there is none (or only a
delete marker), renewed every quarter of the bucket's ``max_age`` (``TTL``,
:data:`.state.LIVE_TTL` = 10 s when Herald creates it) with a compare-and-set on its
last revision, and expiring ``TTL`` seconds after its last renewal.

- **Standing by**: a consume loop that finds the queue held tries again every
  :data:`POLL` seconds (or a quarter of ``TTL``, if shorter), and at once when the
  holder deletes its entry (it listens on the entry's subject). It pulls nothing
  meanwhile.
- **Letting go**: a holder whose consume loop stopped lets go once everything it
  handed out is settled, or ``ack_wait`` after it stopped, whichever comes first;
  it records the queue as released in the holds bucket and deletes its entry.
- **Dying**: a killed holder's entry expires within ``TTL`` of its last renewal.
  The messages it held stay leased to it until their ``ack_wait`` lapses; JetStream
  then redelivers them before anything newer. So a successor that finds the queue
  recorded as held (not released), with unacked messages, waits the consumer's
  ``ack_wait`` (plus :data:`MARGIN`) before its first pull. A killed holder's
  successor therefore takes over within ``TTL + POLL + ack_wait + MARGIN`` seconds
  (42 with the defaults: ``TTL`` 10, ``ack_wait`` 30).
- **Losing it alive**: a holder that cannot renew for three quarters of ``TTL``
  (an outage), or finds its entry replaced, has lost the queue: its consume loop ends
  with :class:`herald.BrokerError`, and it stops extending the leases of what it holds,
  so they come back to the new holder after ``ack_wait``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NATSSubscription

from ...errors import BrokerError, HeraldError
from ...tasks import cancel_and_wait
from .errors import TABLE
from .state import KV_OPERATION, Bucket, Stale

__all__ = ["MARGIN", "POLL", "Hold", "Holders"]

log = logging.getLogger("herald.brokers.nats")
POLL = 1.0
"""Seconds between a standby's tries, at most."""
MARGIN = 1.0
"""Seconds a successor waits beyond ``ack_wait`` for a dead holder's messages."""
HELD, RELEASED = "held", "released"


class Hold:
    """One consume loop's claim on one exclusive queue."""

    def __init__(
        self, nc: Client, live: Bucket, holds: Bucket, consumer: str, queue: str, owner: str
    ) -> None:
        self.queue = queue
        self._nc = nc
        self._live = live
        self._holds = holds
        self._consumer = consumer
        self._key = f"hold.{consumer}"
        self._ttl = live.ttl or 0.0
        self._renew_every = self._ttl / 4
        self._owner = json.dumps({"owner": owner, "queue": queue}).encode()
        self._revision = 0
        self._record = 0
        self._renewing: asyncio.Task[None] | None = None
        self._on_lost: list[Callable[[BrokerError], None]] = []
        self.lost: BrokerError | None = None
        self.released = False

    async def acquire(self) -> bool:
        """Wait until this loop holds the queue; True when its last holder did not
        let go cleanly (it may have died holding messages)."""
        woken = asyncio.Event()

        async def on_change(msg: Msg) -> None:
            if (msg.headers or {}).get(KV_OPERATION):
                woken.set()  # the holder let go

        sub: NATSSubscription | None = None
        with TABLE.converting(f"watching the hold of {self.queue}"):
            sub = await self._nc.subscribe(self._live.subject(self._key), cb=on_change)
        try:
            while not await self._try():
                woken.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(POLL, self._renew_every)):
                        await woken.wait()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._renewing = asyncio.create_task(self._renew(), name=f"herald:hold:{self.queue}")
        return await self._mark_held()

    def on_lost(self, callback: Callable[[BrokerError], None]) -> None:
        self._on_lost.append(callback)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` while holding; raise if the hold is lost meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.lost is not None:
                raise self.lost
            await asyncio.sleep(min(left, 0.25))
        if self.lost is not None:
            raise self.lost

    async def release(self) -> None:
        """Let go: record the queue as released, then delete the entry (both only if
        still this loop's). Idempotent."""
        if self.released:
            return
        self.released = True
        if self._renewing is not None:
            await cancel_and_wait(self._renewing)
        if self.lost is not None or not self._revision or not self._nc.is_connected:
            return
        try:
            if self._record:
                value = json.dumps({"state": RELEASED}).encode()
                await self._holds.put(self._consumer, value, last=self._record)
            await self._live.delete(self._key, last=self._revision)
        except HeraldError as exc:  # the entry expires on its own
            log.debug("could not let go of %s: %s", self.queue, exc)

    async def _try(self) -> bool:
        entry = await self._live.get(self._key)
        if entry is not None and not entry.deleted:
            return False
        try:
            self._revision = await self._live.put(
                self._key, self._owner, last=0 if entry is None else entry.revision
            )
        except Stale:
            return False
        return True

    async def _mark_held(self) -> bool:
        """Record the queue as held; return whether its last holder did not let go."""
        for _ in range(5):
            entry = await self._holds.get(self._consumer)
            state = _state_of(entry.value) if entry is not None else None
            value = json.dumps({"state": HELD}).encode()
            try:
                self._record = await self._holds.put(
                    self._consumer, value, last=entry.revision if entry is not None else 0
                )
            except Stale:
                continue  # a late write of the previous holder
            return state != RELEASED
        return True

    async def _renew(self) -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self._renew_every)
            sent = time.monotonic()
            try:
                self._revision = await self._live.put(
                    self._key, self._owner, last=self._revision, timeout=self._renew_every
                )
                renewed = sent
            except Stale:
                self._lose("another consumer holds it now")
                return
            except HeraldError as exc:
                if time.monotonic() - renewed >= self._ttl - self._renew_every:
                    self._lose(f"not renewed for {self._ttl - self._renew_every:.1f}s ({exc})")
                    return
                log.debug("renewing the hold of %s failed: %s", self.queue, exc)

    def _lose(self, why: str) -> None:
        self.lost = BrokerError(f"lost the exclusive hold of queue {self.queue}: {why}")
        log.warning("%s", self.lost)
        for callback in self._on_lost:
            callback(self.lost)


def _state_of(value: bytes) -> str | None:
    try:
        record = json.loads(value)
    except ValueError:
        return None
    return record.get("state") if isinstance(record, dict) else None


class Holders:
    """The holds of one broker session, so that closing it lets go of them all."""

    def __init__(self) -> None:
        self._holds: set[Hold] = set()
        self._letting_go: set[asyncio.Task[None]] = set()

    def add(self, hold: Hold) -> None:
        self._holds.add(hold)

    def let_go_later(
        self, hold: Hold, settled: Callable[[], Awaitable[None]], grace: float
    ) -> None:
        """Release ``hold`` once ``settled()`` returns or after ``grace`` seconds."""

        async def let_go() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await settled()
            await hold.release()
            self._holds.discard(hold)

        task = asyncio.create_task(let_go(), name=f"herald:let-go:{hold.queue}")
        self._letting_go.add(task)
        task.add_done_callback(self._letting_go.discard)

    async def release(self, hold: Hold) -> None:
        await hold.release()
        self._holds.discard(hold)

    async def close(self) -> None:
        """Let go of every hold now (their messages were given back)."""
        for task in list(self._letting_go):
            task.cancel()
        await asyncio.gather(*self._letting_go, return_exceptions=True)
        for hold in list(self._holds):
            await hold.release()
        self._holds.clear()
