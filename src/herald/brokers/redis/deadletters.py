"""Dead letters on Redis: one stream per service, ``<ns>:herald:{<service>}:dlq``.

Each dead letter is the entry's own fields plus the reason (``herald-dl-*``). They
are kept for ``dlq_retention`` seconds: each dead-lettering trims the stream
(``XTRIM MINID``, entry ids being the server's milliseconds) and sets its expiry to
the retention (``PEXPIRE``), so the whole stream expires natively a retention after
its newest letter; listing, replay and purge trim it first too. Replay moves letters
back to the queue named in their reason, in batches of :data:`BATCH`, each batch one
script (copy + delete), so a replay interrupted half-way leaves every letter either
replayed or still dead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from typing import Any

from redis.asyncio import Redis

from ...broker import ProgressCallback
from ...deadletter import DeadLetter
from ...errors import BrokerError, ErrorTable
from ...message import Message
from . import scripts
from .settings import RedisSettings
from .topology import Keys
from .wire import encode_fields, stored_message

__all__ = ["BATCH", "DeadLetterStore"]

BATCH = 100


class DeadLetterStore:
    """List, replay and purge the dead letters of a namespace's services."""

    def __init__(
        self, client: Redis, keys: Keys, settings: RedisSettings, table: ErrorTable
    ) -> None:
        self._client = client
        self._keys = keys
        self._retention_ms = settings.dlq_retention_ms
        self._table = table
        self._trim = client.register_script(scripts.TRIM_DEAD_LETTERS)
        self._replay = client.register_script(scripts.REPLAY)

    async def _expire(self, key: str) -> None:
        await self._trim(keys=[key], args=[self._retention_ms])

    async def _entries(
        self, service: str, limit: int | None = None
    ) -> AsyncIterator[tuple[bytes, DeadLetter]]:
        key = self._keys.dead_letters(service)
        await self._expire(key)
        start: bytes | str = "-"
        seen = 0
        while limit is None or seen < limit:
            count = BATCH if limit is None else min(BATCH, limit - seen)
            batch: Any = await self._client.xrange(key, start, "+", count=count)
            for entry_id, fields in batch:
                yield entry_id, DeadLetter.from_stored(stored_message(entry_id, fields))
            seen += len(batch)
            if len(batch) < count:
                return
            start = b"(" + batch[-1][0]

    async def list(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        with self._table.converting(f"reading the dead letters of {service}"):
            return [letter async for _, letter in self._entries(service, limit)]

    async def replay(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
        edited: Message | None = None,
    ) -> int:
        """Replay the chosen letters; with ``edited``, the first of them as that message."""
        with self._table.converting(f"reading the dead letters of {service}"):
            queues: list[Any] = await self._client.hkeys(self._keys.bindings)
            bound = {q.decode() for q in queues}
            chosen: list[tuple[bytes, DeadLetter]] = []
            async for entry_id, letter in self._entries(service):
                if ids is not None and letter.message.id not in ids:
                    continue
                if letter.reason.queue not in bound:
                    raise BrokerError(
                        f"queue {letter.reason.queue[:200]!r} no longer exists; cannot replay"
                    )
                chosen.append((entry_id, letter))
                if edited is not None:
                    break
        done = 0
        for start in range(0, len(chosen), BATCH):
            keys = [self._keys.dead_letters(service)]
            args: list[Any] = [len(chosen[start : start + BATCH])]
            for entry_id, letter in chosen[start : start + BATCH]:
                target = self._keys.queue(letter.reason.queue)
                if target not in keys:
                    keys.append(target)
                fields = encode_fields(edited or letter.for_replay())
                args += [entry_id, keys.index(target) + 1, len(fields), *fields]
            with self._table.converting(f"replaying the dead letters of {service}"):
                done += await self._replay(keys=keys, args=args)
            if progress:
                progress(done, len(chosen))
        return done

    async def purge(self, service: str, ids: Collection[str] | None = None) -> int:
        key = self._keys.dead_letters(service)
        with self._table.converting(f"purging the dead letters of {service}"):
            if ids is None:
                await self._expire(key)
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.xlen(key)
                    pipe.delete(key)
                    count, _ = await pipe.execute()
                return int(count)
            doomed = [e async for e, letter in self._entries(service) if letter.message.id in ids]
            deleted = 0
            for start in range(0, len(doomed), BATCH):
                deleted += await self._client.xdel(key, *doomed[start : start + BATCH])
            return deleted
