"""The consume loop: a streaming pull from a queue's JetStream consumers, within a
prefetch window of messages and bytes.

nats-py's ``fetch()`` waits for a whole batch or its timeout, which adds its timeout to
the latency of a lone message. This feed keeps one pull request standing per consumer
instead: messages arrive on a private inbox as soon as they are stored, and when a
request is used up (or expired: 408, failed: 409, or went silent: no heartbeat because
the server restarted) a new one is sent. Data messages carry their stream subject,
not the request's, so one request at a time per consumer is what lets the feed count
what each request still owes.

The queue's consumer on the events stream is asked for what the window has room for,
in messages (``batch``, once a quarter of them is free) and bytes (``max_bytes``). A
message that does not fit in what is left of ``max_bytes`` (which counts its subject
and headers too) ends the request (409) and is then asked for alone, as soon as the
window has room by its own rule (bodies held under ``prefetch.bytes``, or nothing
held), so the window fills exactly as :class:`herald.window.Window` says and a body
larger than the whole window still flows, one at a time. The queue's replay consumer
always has a request for one message standing (replays are rare). Deliveries are
handed out only while the window has room.

An exclusive queue is consumed only while this loop holds it (:mod:`.exclusive`);
until then the loop stands by, pulling nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NATSSubscription

from ...broker import Delivery, Prefetch, Subscription
from ...errors import BrokerError, HeraldError, MessageError
from ...tasks import cancel_and_wait
from ...window import Window
from .deadletters import DeadLetterStore
from .delivery import Leases, NATSDelivery
from .errors import TABLE
from .exclusive import MARGIN, Hold, Holders
from .presence import Presence
from .topology import Topology, consumer_name
from .wire import from_headers, undecodable

__all__ = ["Parts", "PullFeed", "PullSource", "consume"]

log = logging.getLogger("herald.brokers.nats")
NANOS = 1_000_000_000
QUIET = 0.05
"""Seconds a closing feed waits, still listening, before it unsubscribes."""
ACK_PREFIX = "$JS.ACK."


@dataclass(frozen=True, slots=True)
class PullSource:
    """A durable consumer to pull from; the ``primary`` one is sized by the window."""

    stream: str
    consumer: str
    primary: bool = False


@dataclass(slots=True)
class _Request:
    token: str
    batch: int
    remaining: int
    expires_at: float
    seen: float = field(default_factory=time.monotonic)


class PullFeed:
    """Messages of one queue's consumers, handed out within ``window``."""

    def __init__(
        self,
        nc: Client,
        sources: list[PullSource],
        window: Window,
        *,
        on_receive: Callable[[Msg], None],
        expires: float = 15.0,
        heartbeat: float = 3.0,
    ) -> None:
        self._nc = nc
        self._sources = sources
        self._window = window
        self._on_receive = on_receive
        self._expires = expires
        self._heartbeat = heartbeat
        self._buffer: asyncio.Queue[Msg | BaseException] = asyncio.Queue()
        self._buffered = 0
        self._buffered_bytes = 0
        self._current: list[_Request | None] = [None] * len(sources)
        self._by_stream = {source.stream: i for i, source in enumerate(sources)}
        self._oversize = False
        self._ids = itertools.count(1)
        self._kick = asyncio.Event()
        self._inbox = ""
        self._sub: NATSSubscription | None = None
        self._pump: asyncio.Task[None] | None = None
        self._closing = False
        self._stopped: BaseException | None = None
        self._stopping = asyncio.Event()
        self._unhanded: list[Msg] = []
        self._idle = asyncio.Event()

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        with TABLE.converting("subscribing to the pull inbox"):
            self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)
        self._kick.set()
        self._pump = asyncio.create_task(self._run_pump(), name=f"herald:pull:{self._inbox}")

    async def messages(self) -> AsyncIterator[Msg]:
        """Received messages, each taken from the window; call :meth:`settled` for each."""
        window, buffer = self._window, self._buffer
        while True:
            if not window.has_room or self._stopped is not None:
                await self._room()
            item = buffer.get_nowait() if buffer.qsize() else await buffer.get()
            if isinstance(item, BaseException):
                raise item
            self._buffered -= 1
            self._buffered_bytes -= len(item.data)
            if self._stopped is not None:
                self._unhanded.append(item)
                raise self._stopped
            window.take(len(item.data))
            self._idle.clear()
            yield item

    def settled(self, size: int) -> None:
        """A handed-out message of ``size`` bytes was settled (or failed to be)."""
        self._window.give(size)
        if not self._window.used:
            self._idle.set()
        self._kick.set()

    async def drained(self) -> None:
        """Return once every handed-out message was settled."""
        while self._window.used:
            self._idle.clear()
            await self._idle.wait()

    def fail(self, error: BaseException) -> None:
        """End :meth:`messages` with ``error`` (after what was already received)."""
        self._buffer.put_nowait(error)

    def stop(self, error: BaseException) -> None:
        """End :meth:`messages` with ``error`` now, handing out nothing more."""
        self._stopped = error
        self._stopping.set()
        self._buffer.put_nowait(error)

    async def _room(self) -> None:
        if not self._window.has_room and self._stopped is None:
            waits = {
                asyncio.ensure_future(self._window.room()),
                asyncio.ensure_future(self._stopping.wait()),
            }
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
        if self._stopped is not None:
            raise self._stopped

    def reset(self) -> None:
        """Forget the standing requests (the connection was re-established)."""
        self._current = [None] * len(self._sources)
        self._kick.set()

    async def close(self) -> list[Msg]:
        """Stop pulling; return the received messages that were never handed out.
        Idempotent: a second call returns what arrived since."""
        self._closing = True
        if self._pump is not None:
            await cancel_and_wait(self._pump)
        if self._sub is not None:
            # A round trip and a pause first let the server deliver, while the inbox
            # still listens, what a standing request may be owed (messages given back
            # just before, a request sent just before): see _forget_requests. Draining
            # (unsubscribe, round trip, then run the callback on what is still in
            # flight) then collects what was sent, so it is given back now instead of
            # waiting out its ack_wait.
            if any(self._current) and self._nc.is_connected:
                with contextlib.suppress(Exception):
                    await self._nc.flush(timeout=max(1, int(self._heartbeat)))
                await asyncio.sleep(QUIET)
            sub, self._sub = self._sub, None
            try:
                await asyncio.wait_for(sub.drain(), self._heartbeat)  # type: ignore[no-untyped-call]
            except Exception:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            await self._forget_requests()
        left, self._unhanded = self._unhanded, []
        while not self._buffer.empty():
            item = self._buffer.get_nowait()
            if not isinstance(item, BaseException):
                left.append(item)
        return left

    async def _forget_requests(self) -> None:
        """Make JetStream drop this feed's pull requests, whose inbox is gone.

        nats-server 2.9.10 drops such a request only when it next looks at the
        consumer's waiting requests (a consumer info does). A message given back with
        a ``nak`` (or whose ack_wait lapsed) that the server tries to hand to the dead
        request before that makes it roll the consumer's position back by one: the
        last message it delivered new counts as never delivered (and also as unacked,
        if it was) and comes again as a first attempt. The pause before unsubscribing
        (:data:`QUIET`) makes that race rare (none in 110 release-then-stop rounds; 1 in
        30 with the round trip alone, most rounds with neither); it cannot rule it out.
        """
        if not self._nc.is_connected:
            return
        for source in self._sources:
            with contextlib.suppress(Exception):
                await self._nc.request(
                    f"$JS.API.CONSUMER.INFO.{source.stream}.{source.consumer}",
                    b"",
                    timeout=self._heartbeat,
                )

    async def _on_msg(self, msg: Msg) -> None:
        if not msg.reply:
            self._on_status(msg.subject.rpartition(".")[2], msg.headers or {})
            return
        try:
            ours = msg.reply.startswith(ACK_PREFIX)
            source = self._by_stream[msg.metadata.stream] if ours else -1
        except (KeyError, ValueError, IndexError):
            source = -1
        if source < 0:
            log.warning("ignored a message on pull inbox %s not from JetStream", self._inbox)
            return
        request = self._current[source]
        if request is not None:
            request.seen = time.monotonic()
            request.remaining -= 1
            if request.remaining <= 0:
                self._current[source] = None
                self._kick.set()
        self._on_receive(msg)
        self._buffered += 1
        self._buffered_bytes += len(msg.data)
        self._buffer.put_nowait(msg)

    def _on_status(self, token: str, headers: dict[str, str]) -> None:
        found = [i for i, r in enumerate(self._current) if r is not None and r.token == token]
        if not found:
            return
        index = found[0]
        request = self._current[index]
        assert request is not None
        status = headers.get("Status", "")
        if status == "100":
            request.seen = time.monotonic()
            return
        self._current[index] = None
        self._kick.set()
        description = headers.get("Description", "").lower()
        if status == "409" and "maxbytes" in description:
            # The next message did not fit in what was left of max_bytes, which counts
            # its subject and headers too; it is asked for alone while the window has room.
            self._oversize = self._oversize or self._sources[index].primary
        elif status == "409" and ("deleted" in description or "push based" in description):
            source = self._sources[index]
            self.fail(BrokerError(f"consumer {source.consumer} on {source.stream}: {description}"))

    async def _run_pump(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._heartbeat):  # wait_for may swallow a cancel
                    await self._kick.wait()
            self._kick.clear()
            self._forget_silent()
            if not self._nc.is_connected:
                continue
            try:
                await self._request_more()
            except HeraldError as exc:  # the next tick retries; the connection may be down
                log.debug("pull request to NATS failed: %s", exc)

    def _forget_silent(self) -> None:
        now = time.monotonic()
        limit = self._heartbeat * 2 + 1
        for index, request in enumerate(self._current):
            if request is None:
                continue
            if now - request.seen > limit or now > request.expires_at + limit:
                self._current[index] = None

    def _primary_request(self) -> tuple[int, int | None] | None:
        """``(batch, max_bytes)`` to ask the events consumer for, or None for now."""
        limit, window = self._window.limit, self._window
        held = window.used + self._buffered
        held_bytes = window.bytes + self._buffered_bytes
        if self._oversize:
            if held and (held >= limit.messages or held_bytes >= limit.bytes):
                return None  # what the window has room for, by the rules of Window
            self._oversize = False
            return 1, None
        room = limit.messages - held
        room_bytes = limit.bytes - held_bytes
        if room < max(1, limit.messages // 4) or room_bytes < 1:
            return None
        return room, room_bytes

    async def _request_more(self) -> None:
        for index, source in enumerate(self._sources):
            if self._current[index] is not None:
                continue
            wanted = self._primary_request() if source.primary else (1, None)
            if wanted is not None:
                await self._pull(index, source, *wanted)

    async def _pull(
        self, index: int, source: PullSource, batch: int, max_bytes: int | None
    ) -> None:
        if self._closing:
            return
        token = str(next(self._ids))
        request: dict[str, int] = {
            "batch": batch,
            "expires": int(self._expires * NANOS),
            "idle_heartbeat": int(self._heartbeat * NANOS),
        }
        if max_bytes is not None:
            request["max_bytes"] = max_bytes
        self._current[index] = _Request(token, batch, batch, time.monotonic() + self._expires)
        with TABLE.converting(f"pulling from {source.consumer} on {source.stream}"):
            await self._nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{source.stream}.{source.consumer}",
                json.dumps(request).encode(),
                reply=f"{self._inbox}.{token}",
            )


@dataclass(frozen=True, slots=True)
class Parts:
    """What a consume loop uses of its broker's session."""

    nc: Client
    topology: Topology
    store: DeadLetterStore
    leases: Leases
    presence: Presence
    holders: Holders
    feeds: set[PullFeed]


async def consume(
    parts: Parts, subscription: Subscription, prefetch: Prefetch
) -> AsyncGenerator[Delivery, None]:
    """Deliveries of ``subscription``'s queue (see :meth:`herald.Broker.consume`)."""
    nc, topology, leases = parts.nc, parts.topology, parts.leases
    ack_waits = await topology.declare(subscription, prefetch.messages)
    lease = min(ack_waits)
    name = consumer_name(subscription.queue)
    names = topology.names
    sources = [
        PullSource(names.streams.events, name, primary=True),
        PullSource(names.streams.replay, name),
    ]
    feed = PullFeed(nc, sources, Window(prefetch), on_receive=lambda m: leases.hold(m, lease, name))
    hold: Hold | None = None
    parts.presence.attach(name)
    try:
        if subscription.exclusive:
            hold = await _take_hold(parts, subscription.queue, name, max(ack_waits))

            def lost(error: BrokerError) -> None:
                feed.stop(error)
                leases.abandon(name)

            hold.on_lost(lost)
        await feed.start()
        parts.feeds.add(feed)

        def done(msg: Msg) -> None:
            leases.drop(msg)
            feed.settled(len(msg.data))

        async for msg in feed.messages():
            meta = msg.metadata
            fallback_id = f"nats:{meta.stream}:{meta.sequence.stream}"
            event_type = names.event_type(msg.subject)
            error: MessageError | None = None
            try:
                message = from_headers(msg.headers, msg.data, event_type, fallback_id)
            except MessageError as exc:
                message, error = undecodable(msg.headers, msg.data, event_type, fallback_id), exc
            yield NATSDelivery(nc, msg, message, subscription, done, parts.store, error=error)
    finally:
        parts.presence.detach(name)
        parts.feeds.discard(feed)
        left = await feed.close()
        for msg in left:
            leases.drop(msg)
        if left and nc.is_connected:
            with contextlib.suppress(HeraldError), TABLE.converting("giving back messages"):
                for msg in left:
                    await msg.nak()
        if hold is not None:
            parts.holders.let_go_later(hold, feed.drained, max(ack_waits))
        if not subscription.durable and nc.is_connected:
            with contextlib.suppress(HeraldError):
                await topology.delete_consumers(name)


async def _take_hold(parts: Parts, queue: str, name: str, ack_wait: float) -> Hold:
    """Stand by until this loop holds ``queue``; then, if its last holder did not let
    go cleanly, wait until what that holder may still lease has come back."""
    topology = parts.topology
    hold = Hold(
        parts.nc, await topology.live(), await topology.holds(), name, queue,
        parts.presence.instance,
    )  # fmt: skip
    parts.holders.add(hold)
    try:
        if await hold.acquire():
            streams = (topology.names.streams.events, topology.names.streams.replay)
            infos = [await topology.consumer_info(stream, name) for stream in streams]
            unacked = sum(info.num_ack_pending or 0 for info in infos if info is not None)
            if unacked:
                log.info(
                    "queue %s: its last holder did not let go; waiting %.0fs (ack_wait) "
                    "for the %d message(s) it may still lease to come back first",
                    queue, ack_wait + MARGIN, unacked,
                )  # fmt: skip
                await hold.sleep(ack_wait + MARGIN)
    except BaseException:
        await parts.holders.release(hold)
        raise
    return hold
