"""What each page shows, assembled from the broker, the store and the controls."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from ..bus import Bus
from ..capabilities import DeadLetterAdmin, QueueInspection, QueueStats
from .collector import Collector
from .controls import ServiceControls, ServiceState
from .flow import HIDDEN_SERVICES, RATE_WINDOW, Flow, build_flow, service_of
from .store import Store

__all__ = ["Dashboard", "FlowView", "dead_letter_services"]

log = logging.getLogger("herald.dashboard")
KNOWN_FOR = 3600.0
"""Seconds a publisher or consumer stays on the graph after it last reported."""
INSPECT_EVERY = 0.9
"""Seconds a reading of the queues serves every open page (they refresh every second)."""
COUNT_EVERY = 5.0
"""Seconds between two readings of the dead letters, for the flow graph."""
COUNT_LIMIT = 10_000
"""Dead letters counted per service at most."""
SILENT_AFTER = 10.0
"""Seconds without a report after which a service counts as silent."""


@dataclass
class FlowView:
    """The flow page at one moment."""

    flow: Flow
    inspection_error: str | None
    heartbeats: dict[str, float]
    controls: list[ServiceState] | None
    now: float

    def silent(self, service: str) -> bool:
        """Whether ``service`` reported before but not in the last few seconds."""
        last = self.heartbeats.get(service)
        return last is not None and self.now - last > SILENT_AFTER


class Dashboard:
    """The dashboard's view of one bus: its broker, the telemetry history and, under
    ``herald demo``, the supervisor's controls."""

    def __init__(
        self,
        bus: Bus,
        store: Store,
        collector: Collector,
        controls: ServiceControls | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        self.collector = collector
        self.controls = controls
        self._inspecting = asyncio.Lock()
        self._inspected_at = float("-inf")
        self._inspection: tuple[list[QueueStats] | None, str | None] = (None, None)
        self._dead_letter_counts: dict[str, int] = {}
        self._counted_at = 0.0

    async def dead_letter_counts(self, services: set[str]) -> dict[str, int]:
        """Dead letters per service, read through the broker's dead-letter admin (for
        brokers that keep them apart from queues), at most every few seconds."""
        if not isinstance(self.bus.broker, DeadLetterAdmin):
            return {}
        if time.monotonic() - self._counted_at > COUNT_EVERY:
            self._counted_at = time.monotonic()
            counts = {}
            for service in sorted(services):
                try:
                    counts[service] = len(await self.bus.dead_letters(service, COUNT_LIMIT))
                except Exception as exc:
                    log.warning("reading dead letters of %s failed: %s", service, exc)
            self._dead_letter_counts = counts
        return self._dead_letter_counts

    async def queue_stats(self) -> tuple[list[QueueStats] | None, str | None]:
        """Every queue's stats, or None and why when the broker cannot tell. Pages open
        at the same time share one reading per :data:`INSPECT_EVERY` seconds."""
        async with self._inspecting:
            if time.monotonic() - self._inspected_at >= INSPECT_EVERY:
                self._inspection = await self._inspect()
                self._inspected_at = time.monotonic()
            return self._inspection

    async def _inspect(self) -> tuple[list[QueueStats] | None, str | None]:
        if not isinstance(self.bus.broker, QueueInspection):
            return None, f"{type(self.bus.broker).__name__} cannot inspect queues"
        try:
            return await self.bus.inspect_queues(), None
        except Exception as exc:
            log.warning("inspecting queues failed: %s", exc)
            return None, f"inspecting queues failed: {str(exc) or type(exc).__name__}"

    async def flow(self) -> FlowView:
        now = time.time()
        stats, error = await self.queue_stats()
        store = self.store
        recent = now - RATE_WINDOW
        recent_published = await store.published_counts(recent, now)
        recent_handled = await store.handled_counts(recent, now)
        flow = build_flow(
            stats,
            published=await store.published_counts(now - KNOWN_FOR, now),
            recent_published={(s, t): n / RATE_WINDOW for s, t, n in recent_published},
            handled=await store.handled_counts(now - KNOWN_FOR, now),
            recent_handled={(q, t): n / RATE_WINDOW for _, q, t, n in recent_handled},
            hidden={self.collector.queue},
            dead_letter_counts=await self.dead_letter_counts(
                {service_of(s.queue) for s in stats or ()}
            ),
        )
        controls = self.controls.states() if self.controls is not None else None
        return FlowView(flow, error, await store.heartbeats(), controls, now)


async def dead_letter_services(dashboard: Dashboard) -> list[str]:
    """Services that may have dead letters: every service with a queue on the broker
    (some brokers keep dead letters apart from queues) or a telemetry report."""
    stats, _ = await dashboard.queue_stats()
    names = {service_of(s.queue) for s in stats or ()}
    names |= set(await dashboard.store.heartbeats())
    return sorted(name for name in names if not name.startswith(HIDDEN_SERVICES))
