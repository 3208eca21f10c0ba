"""A streaming pull from JetStream consumers, within a prefetch window.

nats-py's ``fetch()`` waits for a whole batch or its timeout, which adds its timeout to
the latency of a lone message. This feed keeps one pull request standing per consumer
instead: it asks for as many messages as the window has room for, messages arrive on
a private inbox as soon as they are stored, and when the request is used up (or
expired: 408, failed: 409, or went silent: no heartbeat because the server restarted)
a new one is sent once a quarter of the window is free. Data messages carry their
stream subject, not the request's, so one request at a time is what lets the feed
count what each request still owes.

The first source (the queue's consumer on the events stream) is sized by the window;
the others (its replay consumer) ask for a small fixed batch. At most ``prefetch``
messages are handed out unsettled; the server's ``max_ack_pending`` caps the consumer
as a whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NATSSubscription

from ..errors import BrokerError

__all__ = ["PullFeed", "PullSource"]

log = logging.getLogger("herald.brokers.nats")
NANOS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class PullSource:
    """A durable consumer to pull from; ``batch=None`` sizes requests by the window."""

    stream: str
    consumer: str
    batch: int | None = None


@dataclass(slots=True)
class _Request:
    token: str
    remaining: int
    expires_at: float
    seen: float = field(default_factory=time.monotonic)


class PullFeed:
    """Messages of one queue's consumers, ``prefetch`` unsettled at most."""

    def __init__(
        self,
        nc: Client,
        sources: list[PullSource],
        prefetch: int,
        *,
        on_receive: Callable[[Msg], None],
        expires: float = 15.0,
        heartbeat: float = 3.0,
    ) -> None:
        self._nc = nc
        self._sources = sources
        self._prefetch = prefetch
        self._on_receive = on_receive
        self._expires = expires
        self._heartbeat = heartbeat
        self._window = asyncio.Semaphore(prefetch)
        self._buffer: asyncio.Queue[tuple[Msg, bool] | BaseException] = asyncio.Queue()
        self._current: list[_Request | None] = [None] * len(sources)
        self._by_stream = {source.stream: i for i, source in enumerate(sources)}
        self._ids = itertools.count(1)
        self._inflight = 0
        self._kick = asyncio.Event()
        self._inbox = ""
        self._sub: NATSSubscription | None = None
        self._pump: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)
        self._kick.set()
        self._pump = asyncio.create_task(self._run_pump(), name=f"herald:pull:{self._inbox}")

    async def messages(self) -> AsyncIterator[tuple[Msg, bool]]:
        """``(message, counted)`` pairs; call :meth:`settled` once each is settled."""
        while True:
            await self._window.acquire()
            item = await self._buffer.get()
            if isinstance(item, BaseException):
                self._window.release()
                raise item
            yield item

    def settled(self, counted: bool) -> None:
        """A handed-out message was acked, retried, released or dead-lettered."""
        self._window.release()
        if counted:
            self._inflight -= 1
            self._kick.set()

    def fail(self, error: BaseException) -> None:
        """End :meth:`messages` with ``error`` (after what was already received)."""
        self._buffer.put_nowait(error)

    def reset(self) -> None:
        """Forget the standing requests (the connection was re-established)."""
        self._current = [None] * len(self._sources)
        self._kick.set()

    async def close(self) -> list[Msg]:
        """Stop pulling; return the received messages that were never handed out."""
        self._closing = True
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._sub is not None:
            # Draining (unsubscribe, round trip, then run the callback on what is still
            # in flight) collects the messages a standing request was already sent,
            # so they are given back now instead of waiting out their ack_wait.
            try:
                await asyncio.wait_for(self._sub.drain(), self._heartbeat)  # type: ignore[no-untyped-call]
            except Exception:
                with contextlib.suppress(Exception):
                    await self._sub.unsubscribe()
        left: list[Msg] = []
        while not self._buffer.empty():
            item = self._buffer.get_nowait()
            if not isinstance(item, BaseException):
                left.append(item[0])
        return left

    async def _on_msg(self, msg: Msg) -> None:
        if not msg.reply:
            self._on_status(msg.subject.rpartition(".")[2], msg.headers or {})
            return
        # Data messages keep their stream subject; the ack subject names the stream.
        source = self._by_stream.get(msg.reply.split(".", 4)[2], 0)
        request = self._current[source]
        if request is not None:
            request.seen = time.monotonic()
            request.remaining -= 1
            if request.remaining <= 0:
                self._current[source] = None
                self._kick.set()
        counted = source == 0
        if counted:
            self._inflight += 1
        self._on_receive(msg)
        self._buffer.put_nowait((msg, counted))

    def _on_status(self, token: str, headers: dict[str, Any]) -> None:
        found = [i for i, r in enumerate(self._current) if r is not None and r.token == token]
        if not found:
            return
        index = found[0]
        request = self._current[index]
        assert request is not None
        status = str(headers.get("Status", ""))
        if status == "100":
            request.seen = time.monotonic()
            return
        self._current[index] = None
        self._kick.set()
        if status == "409":
            description = " ".join(
                str(value).lower() for key, value in headers.items() if key == "Description"
            )
            if "deleted" in description or "push based" in description:
                source = self._sources[index]
                self._buffer.put_nowait(
                    BrokerError(
                        f"consumer {source.consumer} on stream {source.stream}: {description}"
                    )
                )

    async def _run_pump(self) -> None:
        while not self._closing:  # wait_for may swallow a cancel that races its timeout
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self._heartbeat)
            self._kick.clear()
            self._forget_silent()
            if not self._nc.is_connected:
                continue
            try:
                await self._request_more()
            except Exception as exc:  # the next tick retries; the connection may be down
                log.debug("pull request to NATS failed: %s", exc)

    def _forget_silent(self) -> None:
        now = time.monotonic()
        limit = self._heartbeat * 2 + 1
        for index, request in enumerate(self._current):
            if request is None:
                continue
            if now - request.seen > limit or now > request.expires_at + limit:
                self._current[index] = None

    async def _request_more(self) -> None:
        for index, source in enumerate(self._sources):
            if self._current[index] is not None:
                continue
            if source.batch is None:
                room = self._prefetch - self._inflight
                if room < max(1, self._prefetch // 4):
                    continue
                batch = room
            else:
                batch = source.batch
            await self._pull(index, source, batch)

    async def _pull(self, index: int, source: PullSource, batch: int) -> None:
        token = str(next(self._ids))
        request = {
            "batch": batch,
            "expires": int(self._expires * NANOS),
            "idle_heartbeat": int(self._heartbeat * NANOS),
        }
        self._current[index] = _Request(token, batch, time.monotonic() + self._expires)
        await self._nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{source.stream}.{source.consumer}",
            json.dumps(request).encode(),
            reply=f"{self._inbox}.{token}",
        )
