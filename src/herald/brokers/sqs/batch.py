"""Batching: every call that has a batch form carries up to ten entries.

Entries submitted in the same turn of the event loop (the acks of deliveries that
finished together, the messages of one publish, the extensions of one heartbeat) go
out in calls of at most :data:`BATCH` entries and :data:`~.wire.MAX_SIZE` bytes,
sent concurrently. Each submitter waits for its own entry's outcome: a batch call
answers per entry, so one entry refused fails only its own submitter.

An entry submitted with a ``key`` supersedes an earlier one of the same key that is
not sent yet (the earlier submitter returns as if it was sent): calls sent
concurrently may be applied in any order, and a message's visibility must end as the
last change asked for it (a release right after a heartbeat's extension must not be
overtaken by that extension, leaving the message invisible for a whole timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ...errors import BrokerError, ErrorTable, HeraldError
from .wire import MAX_SIZE

__all__ = ["BATCH", "Batcher", "EntryError"]

BATCH = 10
"""The most entries any SQS or SNS batch call takes."""

Call = Callable[[list[dict[str, Any]]], Awaitable[dict[str, Any]]]


class EntryError(BrokerError):
    """The service refused one entry of a batch; ``code`` is its error code."""

    def __init__(self, text: str, code: str) -> None:
        super().__init__(text)
        self.code = code


class Batcher:
    """Collects the entries of one batch call (one queue or topic) and sends them."""

    def __init__(
        self,
        call: Call,
        doing: str,
        table: ErrorTable,
        error: type[BrokerError] = BrokerError,
        max_bytes: int = MAX_SIZE,
    ) -> None:
        self._call = call
        self._doing = doing
        self._table = table
        self._error = error
        self._max_bytes = max_bytes
        self._pending: list[tuple[dict[str, Any], int, asyncio.Future[None]]] = []
        self._keyed: dict[str, asyncio.Future[None]] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, entry: dict[str, Any], size: int = 0, key: str | None = None) -> None:
        """Send ``entry`` (without its ``Id``) in the next batch; raise if it failed.
        With ``key``, it supersedes a pending entry of the same key."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if key is not None:
            earlier = self._keyed.get(key)
            kept = [item for item in self._pending if item[2] is not earlier]
            if earlier is not None and len(kept) < len(self._pending):  # not sent yet
                self._pending = kept
                earlier.set_result(None)
            self._keyed[key] = future
            future.add_done_callback(lambda _: self._forget(key, future))
        self._pending.append((entry, size, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await asyncio.shield(future)

    def _forget(self, key: str, future: asyncio.Future[None]) -> None:
        if self._keyed.get(key) is future:
            del self._keyed[key]

    async def drain(self) -> None:
        """Wait for what was submitted to be sent."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush(self) -> None:
        while self._pending:
            await asyncio.sleep(0)
            pending, self._pending = self._pending, []
            chunks: list[list[tuple[dict[str, Any], int, asyncio.Future[None]]]] = [[]]
            total = 0
            for item in pending:
                chunk = chunks[-1]
                if chunk and (len(chunk) == BATCH or total + item[1] > self._max_bytes):
                    chunks.append([])
                    total = 0
                chunks[-1].append(item)
                total += item[1]
            try:
                await asyncio.gather(*(self._send(chunk) for chunk in chunks))
            except BaseException:
                for _, _, future in pending:
                    if not future.done():
                        future.cancel()
                raise

    async def _send(self, chunk: list[tuple[dict[str, Any], int, asyncio.Future[None]]]) -> None:
        entries = [{**entry, "Id": str(n)} for n, (entry, _, _) in enumerate(chunk)]
        try:
            reply = await self._call(entries)
        except Exception as exc:
            error = self._table.convert(exc, self._doing, self._error)
            error.__cause__ = exc
            for _, _, future in chunk:
                _fail(future, error)
            return
        failed = {str(f.get("Id")): f for f in reply.get("Failed") or ()}
        for n, (_, _, future) in enumerate(chunk):
            problem = failed.get(str(n))
            if problem is None:
                if not future.done():
                    future.set_result(None)
            else:
                code = str(problem.get("Code", ""))
                text = f"{self._doing} failed: {code}: {problem.get('Message', '')}".strip()
                _fail(future, EntryError(text, code))


def _fail(future: asyncio.Future[None], error: HeraldError) -> None:
    if not future.done():
        future.set_exception(error)
