"""The Redis client: redis-py's asyncio pool, packing commands with hiredis when present.

redis-py's asyncio connections parse replies with hiredis but build every command in
Python; a publish script call carries a dozen arguments per message, so that packing
dominated the client's CPU time. hiredis packs the same protocol about three times
faster. Without hiredis installed, redis-py's own packing is used unchanged.

On Python 3.11 redis-py sends each command through ``asyncio.wait_for``, which returns
normally when its task is cancelled just as the write completes: the cancellation is
lost, and a consumer cancelled as it sent ``XREADGROUP BLOCK`` would wait out the block
before it noticed. The connections here raise that cancellation once the write
returns, dropping the connection (the reply it would have read is never read).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import BlockingConnectionPool, Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import DataError

from .settings import RedisSettings

try:
    import hiredis

    HIREDIS = hasattr(hiredis, "pack_command")
except ImportError:  # pragma: no cover - depends on the environment
    HIREDIS = False

__all__ = ["HIREDIS", "new_client"]


def _pack(args: tuple[Any, ...]) -> list[bytes]:
    head = args[0]
    if isinstance(head, str):
        args = tuple(head.encode().split()) + args[1:]
    elif b" " in head:
        args = tuple(head.split()) + args[1:]
    try:
        packed: bytes = hiredis.pack_command(args)
    except TypeError:
        # hiredis takes str, int, float and bytes only: copying every argument up front
        # to catch the rare buffer cost a publish a tenth of its CPU time
        args = tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args)
        try:
            packed = hiredis.pack_command(args)
        except TypeError as exc:
            raise DataError(str(exc)) from exc
    return [packed]


async def _send(connection: Connection, sending: Awaitable[None]) -> None:
    """Await ``sending``, raising a cancellation of the task that it swallowed."""
    task = asyncio.current_task()
    before = 0 if task is None else task.cancelling()
    await sending
    if task is not None and task.cancelling() > before:
        await connection.disconnect(nowait=True)
        raise asyncio.CancelledError


class _Connection(Connection):
    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        await _send(self, super().send_packed_command(command, check_health))


class _SSLConnection(SSLConnection):
    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        await _send(self, super().send_packed_command(command, check_health))


class _PackedConnection(_Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return _pack(args)


class _PackedSSLConnection(_SSLConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return _pack(args)


def new_client(settings: RedisSettings) -> Redis:
    """A client (not yet connected) with short command retries and keepalive; its
    socket timeout exceeds the longest ``XREADGROUP BLOCK``."""
    socket_timeout = max(30.0, settings.block + 10.0)
    if settings.tls:
        connection_class: type[Connection] = _PackedSSLConnection if HIREDIS else _SSLConnection
    else:
        connection_class = _PackedConnection if HIREDIS else _Connection
    # Blocking: a burst of concurrent publishes waits for a free connection instead of
    # failing with "Too many connections" (redis-py caps a pool at 100 by default).
    pool = BlockingConnectionPool(
        max_connections=64,
        timeout=socket_timeout,
        connection_class=connection_class,
        host=settings.host,
        port=settings.port,
        db=settings.db,
        username=settings.username,
        password=settings.password,
        socket_connect_timeout=5.0,
        socket_timeout=socket_timeout,
        socket_keepalive=True,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
    )
    return Redis.from_pool(pool)
