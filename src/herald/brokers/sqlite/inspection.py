"""Queue counts read from the file, so every process sees the same numbers.

depth:       rows not leased to anyone: ready, and retries waiting out their delay.
in_flight:   rows leased to a consumer and not settled (a settlement that failed
             counts until its lease runs out).
consumers:   live consumer process-brokers taking from the queue or standing by for it
             (exclusive): a fresh heartbeat and, on this host, a running pid.
oldest_age:  seconds since the oldest ready row became ready (published, released,
             its retry fell due); 0 when none is ready.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from ...capabilities import QueueStats
from .settings import SQLiteSettings
from .store import Store
from .topology import queue_ids
from .wakeup import process_alive

__all__ = ["Inspection"]


class Inspection:
    """:class:`herald.QueueInspection` for the SQLite broker (a mixin of it)."""

    settings: SQLiteSettings
    _run: Callable[[Callable[[Store], Any], str], Awaitable[Any]]

    async def inspect_queues(self, queues: Collection[str] | None = None) -> list[QueueStats]:
        wanted = None if queues is None else set(queues)
        lease = self.settings.lease
        stats: list[QueueStats] = await self._run(
            lambda s: _inspect(s, wanted, time.time(), lease), "inspecting queues"
        )
        return stats


def _inspect(store: Store, wanted: set[str] | None, now: float, lease: float) -> list[QueueStats]:
    conn = store.conn
    named = [
        (qid, name)
        for qid, name in conn.execute("SELECT id, name FROM herald_queues ORDER BY name")
        if wanted is None or name in wanted
    ]
    if not named:
        return []
    in_flight = Counter(
        dict(
            conn.execute(
                "SELECT queue, count(*) FROM herald_deliveries WHERE consumer IS NOT NULL"
                " GROUP BY queue"
            ).fetchall()
        )
    )
    consumers: Counter[int] = Counter()
    for other in store.consumers():
        alive = other.heartbeat >= now - lease and (
            other.host != store.host or process_alive(other.pid)
        )
        if alive:
            consumers.update(set(queue_ids(other.queues)))
    stats = []
    for qid, name in named:
        (depth,) = conn.execute(
            "SELECT count(*) FROM herald_deliveries WHERE queue = ? AND consumer IS NULL", (qid,)
        ).fetchone()
        (since,) = conn.execute(
            "SELECT min(since) FROM herald_deliveries WHERE queue = ? AND consumer IS NULL",
            (qid,),
        ).fetchone()
        ready = isinstance(since, int | float) and since <= now
        stats.append(
            QueueStats(
                queue=name,
                depth=depth,
                in_flight=in_flight[qid],
                consumers=consumers[qid],
                oldest_age=max(0.0, now - since) if ready else 0.0,
            )
        )
    return stats
