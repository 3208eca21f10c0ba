"""Dead letters in ``herald_dead_letters``: list, replay, purge, keep for a while.

A dead letter is kept ``dlq_retention`` seconds after it was stored (``0``: for
ever): older ones are no longer listed, replayed or purged, and the maintenance
thread deletes them. Replay puts a letter (or its edited version) back on the queue
its reason names, as a first attempt, but only if that queue exists and belongs to
the same service: a dead letter's headers never send it anywhere else.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from ...broker import ProgressCallback
from ...deadletter import DeadLetter
from ...errors import BrokerError, DecodeError
from ...message import Message
from .settings import SQLiteSettings
from .store import COLUMNS_SQL, INSERT, Store
from .wire import best_effort, decode, encode_message

__all__ = ["DeadLetters"]

_REPLAY_BATCH = 500
_CHUNK = 500
_IN = "IN (SELECT value FROM json_each(?))"


class DeadLetters:
    """:class:`herald.DeadLetterAdmin` for the SQLite broker (a mixin of it)."""

    settings: SQLiteSettings
    _run: Callable[[Callable[[Store], Any], str], Awaitable[Any]]

    def _cutoff(self) -> float:
        retention = self.settings.dlq_retention
        return time.time() - retention if retention else 0.0

    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        cutoff, count = self._cutoff(), -1 if limit is None else limit
        letters: list[DeadLetter] = await self._run(
            lambda s: _list(s, service, count, cutoff), f"listing dead letters of {service}"
        )
        return letters

    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        seqs = await self._seqs(service, ids)
        done = 0
        for start in range(0, len(seqs), _REPLAY_BATCH):
            batch = seqs[start : start + _REPLAY_BATCH]
            replayed: int = await self._run(
                functools.partial(_replay, service=service, seqs=batch),
                f"replaying dead letters of {service}",
            )
            done += replayed
            if progress:
                progress(done, len(seqs))
        return done

    async def replay_edited_dead_letter(self, service: str, id: str, message: Message) -> bool:
        seqs = (await self._seqs(service, [id]))[:1]
        if not seqs:
            return False
        replayed: int = await self._run(
            functools.partial(_replay, service=service, seqs=seqs, edited=message),
            f"replaying dead letter {id[:200]!r} of {service}",
        )
        return replayed == 1

    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        seqs = await self._seqs(service, ids)
        purged: int = await self._run(
            lambda s: _purge(s, seqs), f"purging dead letters of {service}"
        )
        return purged

    async def _seqs(self, service: str, ids: Collection[str] | None) -> list[int]:
        wanted, cutoff = None if ids is None else list(ids), self._cutoff()
        seqs: list[int] = await self._run(
            lambda s: _seqs(s, service, wanted, cutoff), f"finding dead letters of {service}"
        )
        return seqs


def _message(values: Sequence[Any]) -> Message:
    try:
        return decode(values)
    except DecodeError:
        return best_effort(values)


def _list(store: Store, service: str, limit: int, cutoff: float) -> list[DeadLetter]:
    found = store.conn.execute(
        f"SELECT {COLUMNS_SQL} FROM herald_dead_letters WHERE service = ? AND stored >= ?"
        " ORDER BY seq LIMIT ?",
        (service, cutoff, limit),
    )
    return [DeadLetter.from_stored(_message(row)) for row in found]


def _seqs(store: Store, service: str, ids: list[str] | None, cutoff: float) -> list[int]:
    where = "WHERE service = ? AND stored >= ?"
    if ids is None:
        return [seq for (seq,) in store.conn.execute(
            f"SELECT seq FROM herald_dead_letters {where} ORDER BY seq", (service, cutoff)
        )]  # fmt: skip
    seqs: list[int] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = json.dumps(ids[start : start + _CHUNK])
        seqs.extend(seq for (seq,) in store.conn.execute(
            f"SELECT seq FROM herald_dead_letters {where} AND id {_IN}", (service, cutoff, chunk)
        ))  # fmt: skip
    return sorted(seqs)


def _replay(store: Store, service: str, seqs: list[int], edited: Message | None = None) -> int:
    """Put these dead letters back on their queues as first attempts (one dead letter
    as ``edited``, if given)."""
    now = time.time()
    found = store.conn.execute(
        f"SELECT seq, {COLUMNS_SQL} FROM herald_dead_letters WHERE seq {_IN} ORDER BY seq",
        (json.dumps(seqs),),
    ).fetchall()
    queues: dict[str, int] = {}
    for row in found:
        letter = DeadLetter.from_stored(_message(row[1:]))
        name = letter.reason.queue
        if name not in queues:
            hit = store.conn.execute(
                "SELECT id FROM herald_queues WHERE name = ? AND service = ?", (name, service)
            ).fetchone()
            if hit is None:
                raise BrokerError(
                    f"queue {name[:200]!r} of service {service!r} no longer exists; cannot replay"
                )
            queues[name] = hit[0]
        store.conn.execute(
            INSERT, (queues[name], now, *encode_message(edited or letter.for_replay()))
        )
    _purge(store, [row[0] for row in found])
    store.made_ready(queues.values())
    return len(found)


def _purge(store: Store, seqs: list[int]) -> int:
    cur = store.conn.execute(
        f"DELETE FROM herald_dead_letters WHERE seq {_IN}", (json.dumps(seqs),)
    )
    return cur.rowcount
