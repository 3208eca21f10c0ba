"""One supervised AMQP connection: tries the hosts in turn, notices a drop and
reconnects with jittered, capped backoff until closed.

Users ask for a channel; while the connection is down they wait for the next one
(at most ``reconnect_timeout`` seconds, then :class:`ConnectionLostError`). After
every (re)connect the ``on_connected`` hook runs before anyone gets a channel,
which is where the broker declares its topology again.

Operations the server may answer by closing their channel (a passive declaration
of a missing queue, a declaration with other arguments) run :meth:`aside`, on a
short-lived connection of their own: aiormq frees a channel's number as soon as the
server's ``Channel.Close`` arrives, before it sends the ``CloseOk``, so a channel
opened meanwhile on the same connection can get that number, and RabbitMQ then
closes the whole connection (``second 'channel.open' seen``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection

from ...errors import BrokerError, ConnectionLostError
from .errors import describe, error_table
from .settings import AMQPSettings

__all__ = ["AMQPConnection", "Opener"]

log = logging.getLogger("herald.amqp")

BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0

ConnectedHook = Callable[[AbstractConnection], Awaitable[None]]
Opener = Callable[[], Awaitable[AbstractChannel]]
"""Gives a usable channel: the same one while it stays open, a new one after an error
closed it."""


class AMQPConnection:
    """A connection that comes back by itself."""

    def __init__(self, settings: AMQPSettings, on_connected: ConnectedHook | None = None) -> None:
        self.settings = settings
        self.errors = error_table(settings)
        self.generation = 0
        """How many times a connection was established (1 after the first)."""
        self._on_connected = on_connected
        self._conn: AbstractConnection | None = None
        self._ready = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False
        self._endpoint = 0

    @property
    def is_connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed and self._ready.is_set()

    async def connect(self) -> None:
        """Connect once to the first host that answers; raise BrokerError naming each."""
        if self.is_connected:
            return
        self._closed = False
        conn = await self._open_any()
        with self.errors.converting(f"setting up the connection to {self._where()}", BrokerError):
            await self._established(conn)

    async def channel(self, *, confirms: bool = False) -> AbstractChannel:
        """A new channel on the live connection, waiting for a reconnect if needed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.reconnect_timeout
        while True:
            conn = await self.wait_connected(deadline)
            try:
                return await conn.channel(publisher_confirms=confirms)
            except Exception as exc:
                if not conn.is_closed:
                    raise self.errors.convert(exc, "opening a channel", BrokerError) from exc
            await asyncio.sleep(0)

    @contextlib.asynccontextmanager
    async def aside(self) -> AsyncIterator[Opener]:
        """Channels on a connection of their own, closed on exit; one call at a time."""
        loop = asyncio.get_running_loop()
        await self.wait_connected(loop.time() + self.settings.reconnect_timeout)
        conn = await self._open_any()
        channels: list[AbstractChannel] = []

        async def channel() -> AbstractChannel:
            if not channels or channels[-1].is_closed:
                channels.append(await conn.channel(publisher_confirms=False))
            return channels[-1]

        try:
            yield channel
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def probe(self, names: Sequence[str]) -> list[tuple[int, int] | None]:
        """(ready messages, consumers) of each queue; None where there is no such queue
        (or it is another connection's exclusive queue)."""
        found: list[tuple[int, int] | None] = []
        with self.errors.converting("inspecting queues"):
            async with self.aside() as channel:
                for name in names:
                    opened = await channel()
                    try:
                        ok = await opened.queue_declare(name, passive=True)
                    except (aiormq.ChannelNotFoundEntity, aiormq.ChannelLockedResource):
                        with contextlib.suppress(Exception):
                            await opened.close()
                        found.append(None)
                    else:
                        found.append((int(ok.message_count or 0), int(ok.consumer_count or 0)))
        return found

    async def wait_connected(self, deadline: float) -> AbstractConnection:
        """The live connection; raises ConnectionLostError after ``deadline`` (loop time)."""
        loop = asyncio.get_running_loop()
        while True:
            if self._closed or not self.generation:
                state = "closed" if self._closed else "not connected; call connect() first"
                raise BrokerError(f"{self.settings} broker is {state}")
            conn = self._conn
            if conn is not None and not conn.is_closed and self._ready.is_set():
                return conn
            self._ready.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ConnectionLostError(
                    f"no connection to {self._where()} for "
                    f"{self.settings.reconnect_timeout:g}s; still reconnecting"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), remaining)

    async def close(self) -> None:
        self._closed = True
        self._ready.clear()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _established(self, conn: AbstractConnection) -> None:
        self._conn = conn
        self.generation += 1
        try:
            if self._on_connected is not None:
                await self._on_connected(conn)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        if self._closed:
            with contextlib.suppress(Exception):
                await conn.close()
            return
        self._ready.set()
        self._supervisor = asyncio.create_task(self._supervise(conn), name="herald:amqp")

    async def _supervise(self, conn: AbstractConnection) -> None:
        try:
            await conn.closing
            reason = "closed by the server"
        except asyncio.CancelledError:
            if self._closed:
                raise
            reason = "closed"
        except Exception as exc:
            reason = describe(exc, self.settings)
        if self._closed:
            return
        self._ready.clear()
        log.warning("connection to %s lost (%s); reconnecting", self._where(), reason)
        attempt = 0
        while not self._closed:
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt) * random.uniform(0.5, 1.0)
            attempt += 1
            await asyncio.sleep(delay)
            try:
                new = await self._open_any()
                await self._established(new)
            except BrokerError as exc:
                log.info("reconnect attempt %d failed: %s", attempt, exc)
                continue
            except Exception as exc:
                log.warning(
                    "reconnect attempt %d failed: %s", attempt, describe(exc, self.settings)
                )
                continue
            log.warning("reconnected to %s after %d attempt(s)", self._where(), attempt)
            return

    async def _open_any(self) -> AbstractConnection:
        settings = self.settings
        problems: list[str] = []
        count = len(settings.endpoints)
        for step in range(count):
            index = (self._endpoint + step) % count
            host, port = settings.endpoints[index]
            conn = aiormq.Connection(
                settings.driver_url(host, port),
                context=settings.ssl_context(),
                client_properties={"connection_name": _connection_name(settings)},
            )
            try:
                await asyncio.wait_for(conn.connect(), settings.connect_timeout)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await conn.close()
                problems.append(f"{host}:{port}: {describe(exc, settings)}")
                continue
            self._endpoint = index
            return conn
        raise BrokerError(
            f"cannot connect to {settings} (vhost {settings.vhost!r}, user "
            f"{settings.username!r}): " + "; ".join(problems)
        )

    def _where(self) -> str:
        host, port = self.settings.endpoints[self._endpoint]
        return f"{host}:{port}"


def _connection_name(settings: AMQPSettings) -> str:
    return f"herald ns={settings.namespace or '-'} pid={os.getpid()}"
