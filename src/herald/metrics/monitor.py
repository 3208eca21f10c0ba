"""Periodic readings of what only the broker or a database knows: queue depth and
the age of the oldest message (:class:`QueueMonitor`), outbox backlog and relay lag
(:class:`herald.metrics.outbox.OutboxMonitor`).

A monitor reads every ``interval`` seconds in the background and sets gauges; a
scrape only reads the gauges. Why not a collector that asks the broker at scrape
time: a scrape would then wait on the broker (a slow or unreachable one makes every
scrape slow, and each of several scrapers adds load); the ASGI exposition renders
on the event loop's thread, where a collector could not wait for a coroutine on that
same loop; and in multi-process mode only what a process wrote to its files is
exposed, which a monitor's gauges are. The price is staleness of up to ``interval``
seconds, shown by ``herald_queue_inspection_timestamp_seconds``. A reading that
fails or takes longer than ``timeout`` leaves the gauges as they were and counts in
``herald_queue_inspection_errors_total``.

>>> import asyncio, herald
>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> async def main() -> None:
...     async with herald.connect("memory://monitor-doctest") as bus:
...         await bus.broker.declare(herald.Subscription("late", "thing.happened"))
...         await bus.publish(herald.Message(type="thing.happened", body=b"{}"))
...         await QueueMonitor(bus, registry=registry).refresh()
>>> asyncio.run(main())
>>> registry.get_sample_value("herald_queue_depth", {"queue": "late.thing.happened"})
1.0
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import logging
import time
from collections.abc import Collection
from typing import Self

from prometheus_client import CollectorRegistry

from ..bus import Bus
from ..tasks import cancel_and_wait
from .instruments import Instruments, instruments_for

__all__ = ["Monitor", "QueueMonitor"]

log = logging.getLogger("herald.metrics")


class Monitor(abc.ABC):
    """Reads something every ``interval`` seconds into gauges, until stopped.

    ``async with monitor:`` (or :meth:`start` / :meth:`stop`) runs it in the
    background, :meth:`run` in the foreground; :meth:`refresh` reads once, now.
    """

    def __init__(
        self,
        *,
        interval: float = 15.0,
        timeout: float = 5.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("interval and timeout must be positive")
        self.interval = interval
        self.timeout = timeout
        self.instruments: Instruments = instruments_for(registry)
        self._task: asyncio.Task[None] | None = None

    @abc.abstractmethod
    async def _read(self) -> None:
        """Read once and set the gauges."""

    async def refresh(self) -> bool:
        """Read once now, within ``timeout``; False (and logged, counted) on failure."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._read()
        except (Exception, builtins.TimeoutError) as exc:
            self.instruments.inspection_errors.inc()
            log.warning("%r: reading failed: %s", self, str(exc) or type(exc).__name__)
            return False
        return True

    def start(self) -> None:
        """Begin reading in the background (the first reading at once)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"herald:{self!r}")

    async def stop(self) -> None:
        """Stop reading; the gauges keep their last values."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Read every ``interval`` seconds until cancelled (what :meth:`start` runs)."""
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)


class QueueMonitor(Monitor):
    """Depth, in flight, consumers and oldest message age of queues, from the bus's
    broker (:class:`herald.capabilities.QueueInspection`).

    ``queues``: the queue names to read (``<service>.<name>``); default: those of the
    services the bus runs and their dead-letter queues, or, when it runs none, every
    queue of the namespace.
    """

    def __init__(
        self,
        bus: Bus,
        queues: Collection[str] | None = None,
        *,
        interval: float = 15.0,
        timeout: float = 5.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(interval=interval, timeout=timeout, registry=registry)
        self.bus = bus
        self.queues = None if queues is None else tuple(queues)

    def __repr__(self) -> str:
        return f"QueueMonitor({self.bus.url!r})"

    def _names(self) -> list[str] | None:
        if self.queues is not None:
            return list(self.queues)
        names: list[str] = []
        for worker in self.bus.workers:
            names += [h.subscription.queue for h in worker.service.handlers]
            names.append(f"{worker.service.name}.dlq")
        return names or None

    async def _read(self) -> None:
        stats = await self.bus.inspect_queues(self._names())
        m = self.instruments
        for item in stats:
            m.queue_depth.labels(item.queue).set(item.depth)
            if item.in_flight is not None:
                m.queue_in_flight.labels(item.queue).set(item.in_flight)
            if item.consumers is not None:
                m.queue_consumers.labels(item.queue).set(item.consumers)
            if item.oldest_age is not None:
                m.queue_oldest_age.labels(item.queue).set(item.oldest_age)
        m.inspected_at.set(time.time())
