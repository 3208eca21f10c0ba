"""``redis://[:password@]host:6379/0?namespace=NS&lease=10&block=1`` — Redis Streams.

One stream per queue (``<ns>:herald:q:<queue>``) with one consumer group; the
bindings (queue -> patterns) live in a hash with a version token, and a publish
fans out into every bound queue's stream inside a Lua script that first checks the
version it routed with, so a publish after ``declare`` returned always reaches the
queue. ``rediss://`` uses TLS. Options (seconds): ``lease`` — an unsettled delivery
whose consumer stopped renewing it for this long is claimed by another consumer
(default 10); ``block`` — longest XREADGROUP wait (default 1). See docs/redis.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncGenerator, Collection, Sequence
from dataclasses import replace
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..broker import Broker, Delivery, Features, ProgressCallback, Subscription
from ..deadletter import DeadLetter
from ..errors import BrokerError, BrokerURLError, PublishError
from ..message import Message
from ..topic import matches
from ..url import BrokerURL
from .redis_connection import new_client
from .redis_consumer import START, Housekeeper, QueueReader
from .redis_deadletters import DeadLetterStore
from .redis_delivery import Inflight, Settler, Window, broker_error
from .redis_fields import Keys, encode_fields
from .redis_scripts import DECLARE, PUBLISH, RELEASE_CONSUMER, UNDECLARE

__all__ = ["RedisBroker"]

_PUBLISH_TRIES = 8


class RedisBroker(Broker):
    """Redis Streams. ``features`` says persistent and restartable only once connected
    to a server that has the append-only file on (``INFO persistence``): without it a
    Redis restart loses every queue."""

    scheme = "redis"
    features = Features(
        persistent=False,
        multi_process=True,
        restartable=False,
        retry_headers=True,
        counts_redelivery=True,
        max_message_bytes=64 * 1024 * 1024,
    )

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        namespace: str = "",
        lease: float = 10.0,
        block: float = 1.0,
        shown_url: str = "",
    ) -> None:
        self._options: dict[str, Any] = {
            "host": host,
            "port": port,
            "db": db,
            "username": username,
            "password": password,
            "tls": tls,
        }
        self.url = shown_url or f"{'rediss' if tls else 'redis'}://{host}:{port}/{db}"
        self.keys = Keys.for_namespace(namespace)
        self.lease = lease
        self.block = block
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._client: Redis | None = None
        self._settler: Settler | None = None
        self._dead: DeadLetterStore | None = None
        self._scripts: dict[str, Any] = {}
        self._version: str | None = None
        self._bindings: dict[str, tuple[str, ...]] = {}
        self._routes: dict[str, tuple[str, ...]] = {}
        self._inflight: dict[str, Inflight] = {}
        self._reader: QueueReader | None = None
        self._housekeeper: Housekeeper | None = None

    @classmethod
    def from_url(cls, url: BrokerURL) -> RedisBroker:
        url.reject_unknown({"namespace", "lease", "block"})
        if len(url.hosts) != 1:
            raise BrokerURLError(str(url), "host", "redis:// takes exactly one host")
        host, port = url.hosts[0]
        db_text = url.path.strip("/") or "0"
        if not db_text.isdigit():
            raise BrokerURLError(str(url), "path", f"{db_text!r} is not a database number")
        return cls(
            host,
            port or 6379,
            db=int(db_text),
            username=url.username,
            password=url.password,
            tls=url.scheme == "rediss",
            namespace=url.option("namespace", ""),
            lease=url.float_option("lease", 10.0, 0.1),
            block=url.float_option("block", 1.0, 0.01),
            shown_url=str(url),
        )

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise BrokerError(f"{self.url}: not connected")
        return self._client

    async def connect(self) -> None:
        if self._client is not None:
            return
        client = new_client(**self._options, socket_timeout=max(30.0, self.block + 10.0))
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise broker_error(exc, f"connecting to {self.url}") from exc
        self._client = client
        durable = await self._server_is_durable()
        self.features = replace(type(self).features, persistent=durable, restartable=durable)
        for name, source in (
            ("publish", PUBLISH),
            ("declare", DECLARE),
            ("undeclare", UNDECLARE),
            ("release_consumer", RELEASE_CONSUMER),
        ):
            self._scripts[name] = client.register_script(source)
        self._housekeeper = Housekeeper(
            client, self.keys.delayed, self.consumer, self.lease, self._inflight
        )
        self._settler = Settler(
            client,
            self.consumer,
            self.keys.delayed,
            self.keys.dead_letters,
            self._housekeeper.wake,
        )
        self._reader = QueueReader(client, self.consumer, self.lease, self._settler, self.declare)
        self._dead = DeadLetterStore(client, self.keys)

    async def _server_is_durable(self) -> bool:
        try:
            info = await self.client.info("persistence")
        except (RedisError, OSError):
            return False
        return bool(int(info.get("aof_enabled", 0)))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if self._housekeeper is not None:
            await self._housekeeper.stop()
        if self._settler is not None:
            await self._settler.drain()
        for inflight in self._inflight.values():
            with contextlib.suppress(RedisError, OSError):
                await self._scripts["release_consumer"](
                    keys=[inflight.stream], args=[inflight.group, self.consumer]
                )
        self._inflight.clear()
        self._version = None
        await client.aclose()

    async def destroy(self) -> None:
        pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.keys.prefix) + "*"
        try:
            batch: list[bytes] = []
            async for key in self.client.scan_iter(match=pattern, count=500):
                batch.append(key)
                if len(batch) >= 500:
                    await self.client.delete(*batch)
                    batch.clear()
            if batch:
                await self.client.delete(*batch)
        except (RedisError, OSError) as exc:
            raise broker_error(exc, "deleting the namespace") from exc
        self._version = None

    # -- publishing ---------------------------------------------------------------

    async def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        limit = self.features.max_message_bytes
        for message in messages:
            if len(message.body) > limit:
                raise PublishError(f"message {message.id} is larger than {limit} bytes")
        script = self._script("publish")
        for _ in range(_PUBLISH_TRIES):
            try:
                if self._version is None:
                    await self._load_bindings()
                keys, args = self._route(messages)
                if await script(keys=keys, args=args) >= 0:
                    return
            except (RedisError, OSError) as exc:
                raise PublishError(f"redis did not store the publish: {exc}") from exc
            self._version = None
        raise PublishError("the bindings kept changing while publishing; try again")

    async def _load_bindings(self) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.version)
            pipe.hgetall(self.keys.bindings)
            version, bindings = await pipe.execute()
        self._bindings = {
            queue.decode(): tuple(patterns.decode().split()) for queue, patterns in bindings.items()
        }
        self._routes.clear()
        self._version = version.decode() if version else ""

    def _route(self, messages: Sequence[Message]) -> tuple[list[str], list[Any]]:
        keys: list[str] = [self.keys.version]
        index: dict[str, int] = {}
        args: list[Any] = [self._version, len(messages)]
        for message in messages:
            targets = self._routes.get(message.type)
            if targets is None:
                targets = tuple(
                    self.keys.queue(queue)
                    for queue, patterns in self._bindings.items()
                    if any(matches(p, message.type) for p in patterns)
                )
                self._routes[message.type] = targets
            args.append(len(targets))
            for stream in targets:
                if stream not in index:
                    keys.append(stream)
                    index[stream] = len(keys)
                args.append(index[stream])
            fields = encode_fields(message) if targets else []
            args.append(len(fields))
            args += fields
        return keys, args

    # -- queues ---------------------------------------------------------------------

    async def declare(self, subscription: Subscription) -> None:
        queue = subscription.queue
        keys = [self.keys.bindings, self.keys.version, self.keys.queue(queue)]
        args = [queue, queue, uuid.uuid4().hex, *subscription.patterns]
        try:
            await self._script("declare")(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise broker_error(exc, f"declaring {queue}") from exc
        self._version = None

    async def _undeclare(self, subscription: Subscription) -> None:
        queue = subscription.queue
        keys = [self.keys.bindings, self.keys.version, self.keys.queue(queue)]
        with contextlib.suppress(RedisError, OSError, BrokerError):
            await self._script("undeclare")(keys=keys, args=[queue, uuid.uuid4().hex])

    async def consume(
        self, subscription: Subscription, prefetch: int
    ) -> AsyncGenerator[Delivery, None]:
        await self.declare(subscription)
        reader, housekeeper = self._consumer_parts()
        stream = self.keys.queue(subscription.queue)
        inflight = self._inflight.setdefault(stream, Inflight(stream, subscription.queue))
        housekeeper.start()
        window = Window(prefetch)
        loop = asyncio.get_running_loop()
        next_claim, cursor = 0.0, START
        try:
            while True:
                await window.wait()
                if inflight.claim_soon or loop.time() >= next_claim:
                    inflight.claim_soon = False
                    cursor, claimed = await reader.claim(inflight, cursor, window.free)
                    next_claim = loop.time() + (self.lease / 2 if cursor == START else 0)
                    for entry_id, fields, delivered in claimed:
                        entry = (entry_id, fields)
                        delivery = await reader.delivery(
                            subscription, inflight, window, entry, delivered
                        )
                        if delivery is not None:
                            yield delivery
                    continue
                wait = min(self.block, max(0.01, next_claim - loop.time()))
                for entry in await reader.read(subscription, inflight, window.free, wait):
                    delivery = await reader.delivery(subscription, inflight, window, entry, 1)
                    if delivery is not None:
                        yield delivery
        finally:
            if not subscription.durable:
                await self._undeclare(subscription)

    def _consumer_parts(self) -> tuple[QueueReader, Housekeeper]:
        if self._reader is None or self._housekeeper is None:
            raise BrokerError(f"{self.url}: not connected")
        return self._reader, self._housekeeper

    # -- dead letters ---------------------------------------------------------------

    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        return await self._dead_store().list(service, limit)

    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        return await self._dead_store().replay(service, ids, progress)

    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        return await self._dead_store().purge(service, ids)

    def _dead_store(self) -> DeadLetterStore:
        if self._dead is None:
            raise BrokerError(f"{self.url}: not connected")
        return self._dead

    def _script(self, name: str) -> Any:
        if self._client is None:
            raise BrokerError(f"{self.url}: not connected")
        return self._scripts[name]
