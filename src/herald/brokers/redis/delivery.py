"""Deliveries from a Redis stream and the operations that settle them.

An ack is ``XACK`` + ``XDEL`` in one ``MULTI``: the stream keeps only unsettled
entries. Acks of deliveries that finish together are sent as one transaction. Retry
and dead-lettering are Lua scripts (see :mod:`.redis_scripts`), so the copy and the
removal of the original happen together or not at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..broker import Delivery, Subscription
from ..deadletter import DeadLetterReason
from ..errors import BrokerError, ConnectionLostError
from ..message import Message
from .redis_fields import ATTEMPT_FIELD
from .redis_scripts import DEAD_LETTER, RETRY

__all__ = ["Inflight", "RedisDelivery", "Settler", "Window", "broker_error"]

RELEASED_IDLE_MS = 10**9
"""Idle time given to a released entry: far past any lease, so it is claimed at once."""


def broker_error(exc: BaseException, doing: str) -> BrokerError:
    """Herald's error for a driver error raised while ``doing`` something."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return ConnectionLostError(f"redis connection lost while {doing}: {exc}")
    return BrokerError(f"redis failed while {doing}: {exc}")


class Window:
    """How many more deliveries a consumer may hand out (its prefetch window)."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._changed = asyncio.Event()

    def take(self) -> None:
        self.free -= 1

    def give(self) -> None:
        self.free += 1
        self._changed.set()

    async def wait(self) -> None:
        while self.free <= 0:
            self._changed.clear()
            await self._changed.wait()


@dataclass(slots=True)
class Inflight:
    """The entries of one queue stream this process holds unsettled (renewed by lease)."""

    stream: str
    group: str
    ids: set[bytes] = field(default_factory=set)
    claim_soon: bool = False


class Settler:
    """Runs ack, retry, release and dead-letter against Redis for a broker's deliveries."""

    def __init__(
        self,
        client: Redis,
        consumer: str,
        delayed_key: str,
        dead_letter_key: Callable[[str], str],
        on_retry: Callable[[], None],
    ) -> None:
        self._client = client
        self._consumer = consumer
        self._delayed_key = delayed_key
        self._dead_letter_key = dead_letter_key
        self._on_retry = on_retry
        self._retry = client.register_script(RETRY)
        self._dead_letter = client.register_script(DEAD_LETTER)
        self._acks: list[tuple[Inflight, bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def ack(self, inflight: Inflight, entry_id: bytes) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks.append((inflight, entry_id, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_acks())
        await asyncio.shield(future)

    async def drain(self) -> None:
        """Wait for acks already requested to be sent."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush_acks(self) -> None:
        while self._acks:
            await asyncio.sleep(0)
            batch, self._acks = self._acks, []
            by_stream: dict[tuple[str, str], list[bytes]] = {}
            for inflight, entry_id, _ in batch:
                by_stream.setdefault((inflight.stream, inflight.group), []).append(entry_id)
            try:
                async with self._client.pipeline(transaction=True) as pipe:
                    for (stream, group), ids in by_stream.items():
                        pipe.xack(stream, group, *ids)
                        pipe.xdel(stream, *ids)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                for _, _, future in batch:
                    if not future.done():
                        error = broker_error(exc, "acknowledging")
                        error.__cause__ = exc
                        future.set_exception(error)
            else:
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def retry(
        self,
        inflight: Inflight,
        entry_id: bytes,
        delay: float,
        attempts: int,
        headers: Mapping[str, str],
    ) -> None:
        args: list[Any] = [inflight.group, entry_id, max(0, round(delay * 1000))]
        args += [ATTEMPT_FIELD, attempts]
        for name, value in headers.items():
            args += (name, value)
        try:
            await self._retry(keys=[inflight.stream, self._delayed_key], args=args)
        except (RedisError, OSError) as exc:
            raise broker_error(exc, "scheduling a retry") from exc
        self._on_retry()

    async def release(self, inflight: Inflight, entry_id: bytes, delivered: int) -> None:
        try:
            await self._client.xclaim(
                inflight.stream,
                inflight.group,
                self._consumer,
                0,
                [entry_id],
                idle=RELEASED_IDLE_MS,
                retrycount=max(0, delivered - 1),
                justid=True,
            )
        except (RedisError, OSError) as exc:
            raise broker_error(exc, "releasing a delivery") from exc
        inflight.claim_soon = True

    async def dead_letter(
        self, inflight: Inflight, entry_id: bytes, service: str, reason: DeadLetterReason
    ) -> None:
        args: list[Any] = [inflight.group, entry_id, ATTEMPT_FIELD]
        for name, value in reason.to_headers().items():
            args += (name, value)
        keys = [inflight.stream, self._dead_letter_key(service)]
        try:
            await self._dead_letter(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise broker_error(exc, "dead-lettering") from exc


class RedisDelivery(Delivery):
    """One stream entry handed to this process; ``attempt`` = earlier attempts carried
    by the entry (``herald-attempt``) + the group's delivery count for it."""

    __slots__ = ("_delivered", "_entry_id", "_inflight", "_settled", "_settler", "_window")

    def __init__(
        self,
        message: Message,
        subscription: Subscription,
        attempt: int,
        *,
        settler: Settler,
        inflight: Inflight,
        window: Window,
        entry_id: bytes,
        delivered: int,
    ) -> None:
        super().__init__(message, subscription, attempt)
        self._settler = settler
        self._inflight = inflight
        self._window = window
        self._entry_id = entry_id
        self._delivered = delivered
        self._settled = False
        inflight.ids.add(entry_id)
        window.take()

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        self._inflight.ids.discard(self._entry_id)
        self._window.give()
        return True

    async def ack(self) -> None:
        if self._settle():
            await self._settler.ack(self._inflight, self._entry_id)

    async def retry(self, delay: float, headers: Mapping[str, str]) -> None:
        if self._settle():
            await self._settler.retry(self._inflight, self._entry_id, delay, self.attempt, headers)

    async def release(self) -> None:
        if self._settle():
            await self._settler.release(self._inflight, self._entry_id, self._delivered)

    async def dead_letter(self, reason: DeadLetterReason) -> None:
        if self._settle():
            await self._settler.dead_letter(
                self._inflight, self._entry_id, self.subscription.service, reason
            )
