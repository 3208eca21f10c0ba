"""Queue inspection: depth, in flight, consumers and the oldest wait, read from Redis.

One script per queue reads, atomically and on the server's clock:

- depth: entries after the group's last delivered id (a stream holds only unsettled
  entries, so ``XLEN`` minus the pending count), plus pending entries idle for a
  whole lease (released, or lost with their consumer: they wait to be claimed), plus
  the retries waiting out their delay in the queue's delayed set;
- in flight: the other pending entries, held by live consumers;
- consumers: the queue's liveness set, consumers whose heartbeat is under a lease old;
- oldest age: the longest wait among those waiting entries, from the millisecond
  time of the first undelivered entry's id (when it was published, replayed or its
  retry fell due) and from when a claimable entry's lease ran out.

Every process sees the same numbers. In-flight and claimable are told apart with this
broker's ``lease``; consumers of one queue should share it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from redis.asyncio import Redis

from ...capabilities import QueueStats
from ...errors import ErrorTable
from . import scripts
from .settings import RedisSettings
from .topology import Keys

__all__ = ["Inspector"]


class Inspector:
    """Reads :class:`herald.QueueStats` of a namespace's queues."""

    def __init__(
        self, client: Redis, keys: Keys, settings: RedisSettings, table: ErrorTable
    ) -> None:
        self._client = client
        self._keys = keys
        self._settings = settings
        self._table = table
        self._inspect = client.register_script(scripts.INSPECT)

    async def inspect(self, queues: Collection[str] | None = None) -> list[QueueStats]:
        with self._table.converting("inspecting queues"):
            bound: list[Any] = await self._client.hkeys(self._keys.bindings)
            known = {queue.decode() for queue in bound}
            names = sorted(known if queues is None else known.intersection(queues))
            if not names:
                return []
            async with self._client.pipeline(transaction=False) as pipe:
                for name in names:
                    keys = [
                        self._keys.queue(name),
                        self._keys.delayed(name),
                        self._keys.consumers(name),
                    ]
                    await self._inspect(
                        keys=keys, args=[name, self._settings.lease_ms], client=pipe
                    )
                replies: list[Any] = await pipe.execute()
        return [
            QueueStats(
                queue=name,
                depth=int(reply[0]),
                in_flight=int(reply[1]),
                consumers=int(reply[2]),
                oldest_age=max(0, int(reply[3])) / 1000,
            )
            for name, reply in zip(names, replies, strict=True)
            if reply
        ]
