"""The bus: a connected broker plus the codecs, publishing and serving services.

>>> import asyncio, herald
>>> class Pinged(herald.Event, type="demo.pinged"):
...     n: int
>>> svc = herald.Service("doc")
>>> seen = []
>>> @svc.on(Pinged)
... async def record(event: Pinged, ctx: herald.Context) -> None:
...     seen.append(event.n)
>>> async def main() -> None:
...     async with herald.connect("memory://bus-doctest") as bus:
...         worker = await bus.start(svc)
...         await bus.publish(Pinged(n=1), key="a")
...         while not seen:
...             await asyncio.sleep(0.01)
...         await worker.stop()
>>> asyncio.run(main()); seen
[1]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from typing import TypeVar

import pydantic

from .broker import Broker, ProgressCallback
from .brokers import broker_from_url
from .codec import CodecRegistry, default_codecs
from .deadletter import DeadLetter
from .errors import ConfigurationError
from .event import Event
from .message import Message
from .rpc import ReplyChannel, decode_reply, request_type
from .service import Service
from .url import redact_url, resolve_url
from .worker import Worker

R = TypeVar("R", bound=pydantic.BaseModel)

__all__ = ["Bus", "connect"]

log = logging.getLogger("herald.bus")


class Bus:
    """A connection to one broker. Use ``async with herald.connect(url) as bus``."""

    def __init__(
        self,
        broker: Broker,
        *,
        url: str = "",
        source: str = "herald",
        codecs: CodecRegistry | None = None,
    ) -> None:
        self.broker = broker
        self.url = redact_url(url)
        self.source = source
        self.codecs = codecs or default_codecs
        self._workers: list[Worker] = []
        self._replies: ReplyChannel | None = None

    def __repr__(self) -> str:
        return f"Bus({self.url!r})"

    async def __aenter__(self) -> Bus:
        await self.broker.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop any workers still running, then close the broker connection."""
        workers, self._workers = self._workers, []
        for worker in workers:
            await worker.stop()
        if self._replies is not None:
            await self._replies.close()
            self._replies = None
        await self.broker.close()

    def message(
        self,
        event: Event | Message,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """The envelope ``publish`` would send for ``event``."""
        return self.codecs.envelope(event, source=self.source, key=key, headers=headers)

    async def publish(
        self,
        event: Event | Message,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Publish one event durably; returns once the broker confirmed it.

        ``key`` is the ordering key (CloudEvents ``subject``): events with the same key
        are handled in publish order by each subscribing service.
        """
        message = self.message(event, key=key, headers=headers)
        await self.broker.publish((message,))
        return message

    async def publish_many(
        self, events: Iterable[Event | Message | tuple[Event | Message, str | None]]
    ) -> list[Message]:
        """Publish several events as one batch (``(event, key)`` pairs give keys)."""
        messages: list[Message] = []
        for item in events:
            if isinstance(item, tuple):
                messages.append(self.message(item[0], key=item[1]))
            else:
                messages.append(self.message(item))
        await self.broker.publish(messages)
        return messages

    async def start(self, service: Service, *, concurrency: int | None = None) -> Worker:
        """Start consuming for ``service`` in the background; stop with ``worker.stop()``."""
        if not service.handlers:
            raise ConfigurationError(f"service {service.name!r} has no handlers")
        worker = Worker(self, service, concurrency=concurrency)
        await worker.start()
        self._workers.append(worker)
        return worker

    async def serve(
        self,
        *services: Service,
        concurrency: int | None = None,
        shutdown_timeout: float = 30.0,
        handle_signals: bool = True,
    ) -> None:
        """Run ``services`` until cancelled or sent SIGINT/SIGTERM, then shut down
        gracefully: stop taking deliveries, let running handlers finish within
        ``shutdown_timeout`` seconds, and leave the rest for redelivery."""
        if not services:
            raise ConfigurationError("serve() needs at least one service")
        workers = [await self.start(service, concurrency=concurrency) for service in services]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []

        def on_signal() -> None:
            if stop.is_set():
                log.warning("second signal: exiting now; unfinished deliveries will be redelivered")
                os._exit(1)
            stop.set()

        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, on_signal)
                    installed.append(sig)
        waiters = [asyncio.create_task(w.wait()) for w in workers]
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([stopper, *waiters], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            log.info("signal received; shutting down")
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            for task in (stopper, *waiters):
                task.cancel()
            for worker in workers:
                await asyncio.shield(worker.stop(shutdown_timeout))
                if worker in self._workers:
                    self._workers.remove(worker)

    async def request(
        self,
        request: Event | Message,
        response: type[R],
        *,
        key: str | None = None,
        timeout: float = 10.0,
    ) -> R:
        """Send ``request`` to the service that handles it and return its reply as
        ``response``. Raises :class:`herald.TimeoutError` when no reply comes within
        ``timeout`` seconds, the handler's :class:`herald.ExpectedError` subclass, or
        :class:`herald.RemoteError` for any other failure of the handler."""
        if self._replies is None:
            self._replies = ReplyChannel(self.broker)
        message = self.message(request, key=key)
        message = replace(message, type=request_type(message.type))
        reply = await self._replies.call(message, timeout)
        result = decode_reply(reply, response)
        assert result is not None
        return result

    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        """The dead letters of ``service``, oldest first."""
        return await self.broker.dead_letters(service, limit)

    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Send dead letters back to their queues; returns how many."""
        return await self.broker.replay_dead_letters(service, ids, progress)

    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        """Delete dead letters; returns how many."""
        return await self.broker.purge_dead_letters(service, ids)


def connect(
    url: str | None = None,
    *,
    source: str = "herald",
    codecs: CodecRegistry | None = None,
) -> Bus:
    """A bus on the broker at ``url`` (else ``$HERALD_BROKER``, else the embedded
    ``sqlite:///./var/herald.db``). Connects when entered: ``async with connect() as bus``.
    """
    resolved = resolve_url(url)
    return Bus(broker_from_url(resolved), url=resolved, source=source, codecs=codecs)
