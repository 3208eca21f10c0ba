"""``redis://[:password@]host:6379/0?namespace=NS`` — Redis Streams.

One stream per queue with one consumer group; the bindings (queue -> patterns) live
in a hash with a version token, and a publish fans out into every bound queue's
stream inside a Lua script that first checks the version it routed with, so a
publish after ``declare`` returned always reaches the queue. ``rediss://`` uses TLS.
See :mod:`.settings` for the options and docs/redis.md for the design.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any, Self

from redis.asyncio import Redis

from ...broker import Broker, Delivery, Features, Prefetch, ProgressCallback, Subscription
from ...capabilities import QueueStats
from ...deadletter import DeadLetter
from ...errors import BrokerError, PublishError
from ...message import Message
from ...schedule import due_of
from . import scripts
from .connection import new_client
from .consumer import QueueConsumer
from .deadletters import DeadLetterStore
from .delivery import Settler
from .errors import error_table
from .housekeeper import Housekeeper
from .inspection import Inspector
from .settings import RedisSettings
from .topology import Keys, Routes

__all__ = ["RedisBroker"]

_PUBLISH_TRIES = 8


@dataclass(slots=True)
class _Connected:
    client: Redis
    scripts: dict[str, Any]
    housekeeper: Housekeeper
    settler: Settler
    consumer: QueueConsumer
    dead: DeadLetterStore
    inspector: Inspector


class RedisBroker(Broker):
    """Redis Streams; implements :class:`herald.DeadLetterAdmin` and
    :class:`herald.QueueInspection`.

    ``features.persistent`` is true only once connected to a server with the
    append-only file on (``INFO persistence``): without it a restart loses every queue.
    """

    schemes = ("redis", "rediss")
    features = Features(
        persistent=False,
        multi_process=True,
        retry_headers=True,
        counts_redelivery=True,
        release_counts_attempt=False,
        max_message_bytes=64 * 1024 * 1024,
        native_schedule=True,
    )

    def __init__(self, settings: RedisSettings | None = None) -> None:
        self.settings = settings or RedisSettings()
        self.url = self.settings.shown_url
        self.keys = Keys.for_namespace(self.settings.namespace)
        self.consumer_name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._table = error_table(self.settings.password)
        self._routes = Routes(self.keys)
        self._connected: _Connected | None = None

    def __repr__(self) -> str:
        return f"RedisBroker({self.url!r})"

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(RedisSettings.from_url(url))

    def _parts(self) -> _Connected:
        if self._connected is None:
            raise BrokerError(f"{self.url}: not connected")
        return self._connected

    async def connect(self) -> None:
        if self._connected is not None:
            return
        client = new_client(self.settings)
        try:
            with self._table.converting(f"connecting to {self.url}"):
                await client.ping()
                info = await client.info("persistence")
        except BaseException:
            await client.aclose()
            raise
        durable = bool(int(info.get("aof_enabled", 0)))
        self.features = replace(type(self).features, persistent=durable)
        registered = {
            name: client.register_script(source)
            for name, source in (
                ("publish", scripts.PUBLISH),
                ("publish_later", scripts.PUBLISH_LATER),
                ("declare", scripts.DECLARE),
                ("undeclare", scripts.UNDECLARE),
            )
        }
        args = (client, self.keys, self.settings, self._table)
        housekeeper = Housekeeper(*args)
        settler = Settler(*args, on_retry=housekeeper.wake)
        consumer = QueueConsumer(
            *args,
            name=self.consumer_name,
            settler=settler,
            housekeeper=housekeeper,
            declare=self.declare,
            undeclare=self._undeclare,
        )
        self._connected = _Connected(
            client,
            registered,
            housekeeper,
            settler,
            consumer,
            DeadLetterStore(*args),
            Inspector(*args),
        )

    async def close(self) -> None:
        parts, self._connected = self._connected, None
        if parts is None:
            return
        try:
            await parts.consumer.close()
            await parts.settler.drain()
            await parts.housekeeper.close()
        finally:
            self._routes.forget()
            await parts.client.aclose()

    async def destroy(self) -> None:
        client = self._parts().client
        with self._table.converting("deleting the namespace"):
            batch: list[bytes] = []
            async for key in client.scan_iter(match=self.keys.scan_pattern, count=500):
                batch.append(key)
                if len(batch) >= 500:
                    await client.delete(*batch)
                    batch.clear()
            if batch:
                await client.delete(*batch)
        self._routes.forget()

    # -- publishing -------------------------------------------------------------------

    async def _publish(self, messages: Sequence[Message]) -> None:
        await self._route(messages, None)

    async def _publish_later(self, messages: Sequence[Message]) -> None:
        """Into the delayed set of every bound queue, where delayed retries wait: the
        mover of any consumer of the queue adds each to the stream once due (this
        process's mover at once learns when; another process's within its poll)."""
        now = time.time()
        delays = [max(0, round(((due_of(m) or now) - now) * 1000)) for m in messages]
        await self._route(messages, delays)
        self._parts().housekeeper.wake("")

    async def _route(self, messages: Sequence[Message], delays: list[int] | None) -> None:
        parts = self._parts()
        script = parts.scripts["publish" if delays is None else "publish_later"]
        for _ in range(_PUBLISH_TRIES):
            with self._table.converting("publishing", as_=PublishError):
                if self._routes.version is None:
                    async with parts.client.pipeline(transaction=True) as pipe:
                        pipe.get(self.keys.version)
                        pipe.hgetall(self.keys.bindings)
                        version, bindings = await pipe.execute()
                    self._routes.load(version, bindings)
                keys, args = self._routes.script_arguments(messages, delays)
                if await script(keys=keys, args=args) >= 0:
                    return
            self._routes.forget()
        raise PublishError("the bindings kept changing while publishing; try again")

    # -- queues -----------------------------------------------------------------------

    async def declare(self, subscription: Subscription) -> None:
        queue = subscription.queue
        keys = [self.keys.bindings, self.keys.version, self.keys.queue(queue)]
        with self._table.converting(f"declaring {queue}"):
            await self._parts().scripts["declare"](
                keys=keys, args=[queue, uuid.uuid4().hex, *subscription.patterns]
            )
        self._routes.forget()

    async def _undeclare(self, subscription: Subscription) -> None:
        queue = subscription.queue
        keys = [
            self.keys.bindings,
            self.keys.version,
            self.keys.queue(queue),
            self.keys.delayed(queue),
            self.keys.consumers(queue),
            self.keys.lock(queue),
            self.keys.handoff(queue),
        ]
        try:
            with self._table.converting(f"removing {queue}"):
                await self._parts().scripts["undeclare"](keys=keys, args=[queue, uuid.uuid4().hex])
        except BrokerError:
            pass  # the broker closed under it: nothing more to do

    def consume(
        self, subscription: Subscription, prefetch: Prefetch
    ) -> AsyncGenerator[Delivery, None]:
        # the consumer's own generator, not one wrapping it: a hop less per delivery
        if self._connected is None:
            return self._not_connected()
        return self._connected.consumer.consume(subscription, prefetch)

    async def _not_connected(self) -> AsyncGenerator[Delivery, None]:
        self._parts()
        yield  # type: ignore[misc]  # never reached: _parts() raised

    # -- dead-letter admin -------------------------------------------------------------

    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        return await self._parts().dead.list(service, limit)

    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        return await self._parts().dead.replay(service, ids, progress)

    async def replay_edited_dead_letter(self, service: str, id: str, message: Message) -> bool:
        return await self._parts().dead.replay(service, {id}, None, message) == 1

    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        return await self._parts().dead.purge(service, ids)

    # -- queue inspection --------------------------------------------------------------

    async def inspect_queues(self, queues: Collection[str] | None = None) -> list[QueueStats]:
        return await self._parts().inspector.inspect(queues)
