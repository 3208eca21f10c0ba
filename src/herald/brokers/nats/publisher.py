"""Pipelined JetStream publishing: every message of a batch in flight at once, each
confirmed by its own PubAck.

nats-py's ``publish_async`` cannot be used: when JetStream answers with an error
(the stream's ``max_msg_size``, a full stream, a wrong expected stream), 2.16 raises
it inside the reply callback instead of failing the publish, which then waits out
its timeout. Here each PubAck or error answers its own publish.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence

import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NATSSubscription

from ...errors import BrokerError
from .errors import TABLE

__all__ = ["Outgoing", "Publisher"]

Outgoing = tuple[str, bytes, dict[str, str]]
"""``(subject, body, headers)``."""
NO_RESPONDERS = "503"


class Publisher:
    """Publishes to JetStream through one reply inbox per connection."""

    def __init__(self, nc: Client, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout
        self._prefix = ""
        self._sub: NATSSubscription | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()

    async def publish(self, batch: Sequence[Outgoing]) -> dict[int, BaseException]:
        """Publish ``batch``; return the index and error of each message not stored."""
        await self._subscribe()
        futures: dict[asyncio.Future[None], int] = {}
        tokens: list[str] = []
        failed: dict[int, BaseException] = {}
        loop = asyncio.get_running_loop()
        try:
            for index, (subject, body, headers) in enumerate(batch):
                token = str(next(self._ids))
                future: asyncio.Future[None] = loop.create_future()
                self._waiting[token] = future
                tokens.append(token)
                futures[future] = index
                try:
                    await self._nc.publish(
                        subject, body, reply=self._prefix + token, headers=headers
                    )
                except Exception as exc:
                    future.set_exception(exc)
            if futures:
                _, late = await asyncio.wait(futures, timeout=self._timeout)
                for future in late:
                    future.set_exception(TimeoutError("no PubAck in time"))
            for future, index in futures.items():
                if future.exception() is not None:
                    failed[index] = future.exception()  # type: ignore[assignment]
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
            for token in tokens:
                self._waiting.pop(token, None)
        return failed

    async def _subscribe(self) -> None:
        async with self._lock:
            if self._sub is None:
                self._prefix = self._nc.new_inbox() + "."
                with TABLE.converting("subscribing to the PubAck inbox"):
                    self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def _on_ack(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject.removeprefix(self._prefix), None)
        if future is None or future.done():
            return
        if (msg.headers or {}).get("Status") == NO_RESPONDERS:
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            answer = json.loads(msg.data)
        except ValueError:
            future.set_exception(BrokerError(f"JetStream answered {msg.data[:100]!r}"))
            return
        error = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(error, dict):
            future.set_exception(
                nats.js.errors.APIError(
                    code=error.get("code"),
                    err_code=error.get("err_code"),
                    description=error.get("description"),
                )
            )
        else:
            future.set_result(None)
