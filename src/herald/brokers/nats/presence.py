"""Each process's consumers and unsettled messages per queue, kept where every process
can read them (:mod:`.inspection`).

JetStream counts a queue's delivered-and-unacked messages (``num_ack_pending``) but
not who holds them: a message given back with a ``nak`` (a release, a retry waiting
out its delay) stays in that count until it is delivered again, and a standby waiting
for an exclusive queue pulls nothing, so JetStream does not see it at all. So each
broker writes one entry ``seen.<instance>`` in the live bucket (:mod:`.state`) with,
per queue, its consume loops (standbys too) and the messages it holds (received and
not settled): a third of the bucket's ``max_age`` apart while it has any, and soon
after they change (at most every :data:`THROTTLE` seconds). A process that dies stops
counting when its entry expires, ``max_age`` seconds (:data:`.state.LIVE_TTL`) after
its last write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ...errors import HeraldError
from ...tasks import cancel_and_wait
from .state import LIVE_TTL, Bucket

__all__ = ["THROTTLE", "Presence", "Seen", "read_presence"]

log = logging.getLogger("herald.brokers.nats")
THROTTLE = 0.2
"""Seconds between two writes of one process's entry, at least."""
PREFIX = "seen."


@dataclass(frozen=True, slots=True)
class Seen:
    """A queue as the live processes report it."""

    consumers: int = 0
    held: int = 0


class Presence:
    """Writes this broker's entry; ``held()`` gives the held messages per queue."""

    def __init__(
        self, bucket: Callable[[], Awaitable[Bucket]], held: Callable[[], dict[str, int]]
    ) -> None:
        self.instance = uuid.uuid4().hex
        self._bucket = bucket
        self._held = held
        self._loops: Counter[str] = Counter()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._written = False
        self._closed = False

    @property
    def key(self) -> str:
        return f"{PREFIX}{self.instance}"

    def attach(self, queue: str) -> None:
        """A consume loop of ``queue`` (consumer name) started, or stands by."""
        self._loops[queue] += 1
        self.changed()

    def detach(self, queue: str) -> None:
        self._loops[queue] -= 1
        self.changed()

    def changed(self) -> None:
        if self._closed:
            return
        self._changed.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="herald:nats:presence")

    def snapshot(self) -> dict[str, list[int]]:
        held = self._held()
        queues = {q for q, n in self._loops.items() if n > 0} | set(held)
        return {q: [max(self._loops[q], 0), held.get(q, 0)] for q in sorted(queues)}

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._written:
            with contextlib.suppress(HeraldError):
                await (await self._bucket()).purge(self.key)

    async def _run(self) -> None:
        every = LIVE_TTL / 3
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._changed.wait()
            self._changed.clear()
            snapshot = self.snapshot()
            if not snapshot and not self._written:
                return
            try:
                bucket = await self._bucket()
                every = (bucket.ttl or LIVE_TTL) / 3
                if snapshot:
                    value = json.dumps(snapshot, separators=(",", ":")).encode()
                    await bucket.put(self.key, value, timeout=every)
                    self._written = True
                else:
                    await bucket.purge(self.key)
                    self._written = False
            except HeraldError as exc:
                log.debug("could not write this process's presence: %s", exc)
            await asyncio.sleep(THROTTLE)


async def read_presence(bucket: Bucket) -> dict[str, Seen]:
    """Per queue (consumer name), what the live processes report, added up. Entries
    that do not parse are skipped."""
    totals: dict[str, Seen] = {}
    for key in await bucket.keys(f"{PREFIX}*"):
        entry = await bucket.get(key)
        if entry is None or entry.deleted:
            continue
        try:
            report = json.loads(entry.value)
        except ValueError:
            continue
        if not isinstance(report, dict):
            continue
        for queue, counts in report.items():
            if not (
                isinstance(counts, list)
                and len(counts) == 2
                and all(type(n) is int and n >= 0 for n in counts)
            ):
                continue
            seen = totals.get(queue, Seen())
            totals[queue] = Seen(seen.consumers + counts[0], seen.held + counts[1])
    return totals
