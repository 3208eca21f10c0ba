"""Dead letters on Redis: one stream per service, ``<ns>:herald:dlq:<service>``.

Listing reads the stream; replay moves letters back to the queue named in their
reason, in batches of :data:`BATCH`, each batch one Lua script (copy + delete), so a
replay interrupted half-way leaves every letter either replayed or still dead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..broker import ProgressCallback
from ..deadletter import DeadLetter
from ..errors import BrokerError, DecodeError
from ..message import Message
from .redis_delivery import broker_error
from .redis_fields import Keys, decode_fields, encode_fields, salvage
from .redis_scripts import REPLAY

__all__ = ["BATCH", "DeadLetterStore"]

BATCH = 100
UNKNOWN_TYPE = "herald.undecodable"


class DeadLetterStore:
    """List, replay and purge the dead letters of a namespace's services."""

    def __init__(self, client: Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._replay = client.register_script(REPLAY)

    async def _entries(
        self, service: str, limit: int | None = None
    ) -> AsyncIterator[tuple[bytes, DeadLetter]]:
        key = self._keys.dead_letters(service)
        start: bytes | str = "-"
        seen = 0
        while limit is None or seen < limit:
            count = BATCH if limit is None else min(BATCH, limit - seen)
            try:
                batch: list[tuple[bytes, dict[bytes, bytes]]] = cast(
                    Any, await self._client.xrange(key, start, "+", count=count)
                )
            except (RedisError, OSError) as exc:
                raise broker_error(exc, f"reading the dead letters of {service}") from exc
            for entry_id, fields in batch:
                yield entry_id, DeadLetter.from_stored(_stored_message(fields))
            seen += len(batch)
            if len(batch) < count:
                return
            start = b"(" + batch[-1][0]

    async def list(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        return [letter async for _, letter in self._entries(service, limit)]

    async def replay(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        try:
            queues: list[bytes] = cast(Any, await self._client.hkeys(self._keys.bindings))
            bound = {q.decode() for q in queues}
        except (RedisError, OSError) as exc:
            raise broker_error(exc, "reading the bindings") from exc
        chosen: list[tuple[bytes, DeadLetter]] = []
        async for entry_id, letter in self._entries(service):
            if ids is not None and letter.message.id not in ids:
                continue
            if letter.reason.queue not in bound:
                raise BrokerError(f"queue {letter.reason.queue!r} no longer exists; cannot replay")
            chosen.append((entry_id, letter))
        done = 0
        for start in range(0, len(chosen), BATCH):
            args: list[Any] = [len(chosen[start : start + BATCH])]
            for entry_id, letter in chosen[start : start + BATCH]:
                fields = encode_fields(letter.for_replay())
                args += [entry_id, self._keys.queue(letter.reason.queue), len(fields), *fields]
            try:
                done += await self._replay(keys=[self._keys.dead_letters(service)], args=args)
            except (RedisError, OSError) as exc:
                raise broker_error(exc, f"replaying the dead letters of {service}") from exc
            if progress:
                progress(done, len(chosen))
        return done

    async def purge(self, service: str, ids: Collection[str] | None = None) -> int:
        key = self._keys.dead_letters(service)
        try:
            if ids is None:
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
        except (RedisError, OSError) as exc:
            raise broker_error(exc, f"purging the dead letters of {service}") from exc


def _stored_message(fields: dict[bytes, bytes]) -> Message:
    try:
        return decode_fields(fields)[0]
    except DecodeError:
        return salvage(fields, UNKNOWN_TYPE)
