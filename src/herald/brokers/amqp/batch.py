"""Writing a batch of publishes (or acks) to an aiormq channel in few socket writes.

aiormq's ``basic_publish`` writes (and, with confirms, awaits) one message at a
time, so a pipelined batch costs a task and a socket write per message. Here the
frames of up to ``CHUNK_BYTES`` of messages go out as one write, each message with
its confirmation future registered the way ``basic_publish`` registers it, and its
frames packed by :mod:`.frames` (pamqp where that cannot). The
channel attributes used are checked by :func:`can_write_batch`; without them the
publisher falls back to ``basic_publish``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiormq.abc import AbstractChannel, ChannelFrame
from aiormq.exceptions import ChannelInvalidStateError
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from .frames import publish_frames

__all__ = ["CHUNK_BYTES", "can_write_batch", "write_acks", "write_batch", "write_unconfirmed"]

CHUNK_BYTES = 512 * 1024
CHUNK_MESSAGES = 512
_NEEDED = ("confirmations", "delivery_tag", "write_queue", "max_content_size", "number", "lock")

Publish = tuple[str, str, bytes, spec.Basic.Properties]
"""exchange, routing key, body, properties"""


_CLOSE_EVENT = "_Channel__close_event"
"""aiormq's mark of a channel being closed (``basic_ack`` refuses to write then)."""


async def write_acks(channel: AbstractChannel, top: int | None, single: Sequence[int]) -> None:
    """Ack ``top`` with ``multiple`` and each of ``single``, in that order, in one
    socket write (one ``basic_ack`` each where the channel does not allow it)."""
    chan: Any = channel
    closing = getattr(chan, _CLOSE_EVENT, None)
    if closing is None or not hasattr(chan, "write_queue") or not hasattr(chan, "number"):
        if top is not None:
            await channel.basic_ack(top, multiple=True, wait=False)
        for tag in single:
            await channel.basic_ack(tag, wait=False)
        return
    if channel.is_closed or closing.is_set():
        raise ChannelInvalidStateError(f"{channel!r} closed")
    frames: list[Any] = [spec.Basic.Ack(delivery_tag=tag) for tag in single]
    if top is not None:
        frames.insert(0, spec.Basic.Ack(delivery_tag=top, multiple=True))
    await chan.write_queue.put(ChannelFrame.marshall(channel_number=chan.number, frames=frames))


async def write_unconfirmed(channel: AbstractChannel, item: Publish) -> None:
    """Publish ``item`` on a channel without confirms (``basic_publish`` where the
    channel does not allow writing it here)."""
    chan: Any = channel
    closing = getattr(chan, _CLOSE_EVENT, None)
    confirming = getattr(chan, "publisher_confirms", True)
    if confirming or closing is None or not all(hasattr(chan, name) for name in _NEEDED):
        exchange, routing_key, body, properties = item
        await channel.basic_publish(
            body, exchange=exchange, routing_key=routing_key, properties=properties
        )
        return
    exchange, routing_key, body, properties = item
    number, limit = chan.number, chan.max_content_size
    data = publish_frames(number, exchange, routing_key, body, properties, limit)
    if data is None:
        data = _marshalled(number, exchange, routing_key, body, properties, limit)
    async with chan.lock:
        if channel.is_closed or closing.is_set():
            raise ChannelInvalidStateError(f"{channel!r} closed")
        await chan.write_queue.put(ChannelFrame(payload=data, should_close=False))


def can_write_batch(channel: AbstractChannel) -> bool:
    return (
        getattr(channel, "publisher_confirms", False)
        and all(hasattr(channel, name) for name in _NEEDED)
        and hasattr(ChannelFrame, "marshall")
    )


async def write_batch(
    channel: AbstractChannel, items: Sequence[Publish]
) -> list[asyncio.Future[Any]]:
    """Write ``items`` and return their confirmation futures (in order)."""
    futures: list[asyncio.Future[Any]] = []
    chan: Any = channel
    async with chan.lock:
        start = 0
        while start < len(items):
            end, size = start, 0
            while end < len(items) and end - start < CHUNK_MESSAGES and size < CHUNK_BYTES:
                size += len(items[end][2])
                end += 1
            futures.extend(await _write_chunk(chan, items[start:end]))
            start = end
    return futures


async def _write_chunk(chan: Any, items: Sequence[Publish]) -> list[asyncio.Future[Any]]:
    first_tag = chan.delivery_tag + 1
    parts: list[bytes] = []
    futures: list[asyncio.Future[Any]] = []
    limit = chan.max_content_size
    number = chan.number
    try:
        for exchange, routing_key, body, properties in items:
            data = publish_frames(number, exchange, routing_key, body, properties, limit)
            if data is None:
                data = _marshalled(number, exchange, routing_key, body, properties, limit)
            chan.delivery_tag += 1
            future = chan.create_future()
            chan.confirmations[chan.delivery_tag] = future
            futures.append(future)
            parts.append(data)
        await chan.write_queue.put(ChannelFrame(payload=b"".join(parts), should_close=False))
    except BaseException:
        for tag in range(first_tag, chan.delivery_tag + 1):
            chan.confirmations.pop(tag, None)
        chan.delivery_tag = first_tag - 1
        for future in futures:
            future.cancel()
        raise
    return futures


def _marshalled(
    number: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: spec.Basic.Properties,
    limit: int,
) -> bytes:
    frames: list[Any] = [
        spec.Basic.Publish(exchange=exchange, routing_key=routing_key),
        ContentHeader(properties=properties, body_size=len(body)),
    ]
    frames += [ContentBody(body[i : i + limit]) for i in range(0, len(body), limit)]
    return ChannelFrame.marshall(channel_number=number, frames=frames).payload
