"""Receives the telemetry reports of every process into the store.

The dashboard listens on a transient queue of its own (removed when it stops):
reports published while no dashboard runs are not kept anywhere, so a dashboard that
was down shows a gap in the timeline rather than making the broker hold reports
for a reader that may never come back.
"""

from __future__ import annotations

import contextlib
import logging
import secrets

import pydantic

from ..broker import Prefetch, Subscription
from ..bus import Bus
from ..telemetry.records import REPORT_TYPE, TelemetryReport
from .store import Store

__all__ = ["Collector"]

log = logging.getLogger("herald.dashboard")


class Collector:
    """Stores every telemetry report published on ``bus`` while :meth:`run` runs."""

    def __init__(self, bus: Bus, store: Store) -> None:
        self.bus = bus
        self.store = store
        self.service = f"dashboard-{secrets.token_hex(4)}"
        self.subscription = Subscription(self.service, "telemetry", (REPORT_TYPE,), durable=False)
        self.received = 0
        self.rejected = 0

    @property
    def queue(self) -> str:
        """The collector's own queue (left out of the flow graph)."""
        return self.subscription.queue

    async def declare(self) -> None:
        """Create the queue, so that reports published from now on are kept for us."""
        await self.bus.broker.declare(self.subscription)

    async def run(self) -> None:
        """Store reports until cancelled; a malformed one is logged and dropped."""
        deliveries = self.bus.broker.consume(self.subscription, Prefetch(256))
        async with contextlib.aclosing(deliveries):
            async for delivery in deliveries:
                try:
                    report = TelemetryReport.model_validate_json(delivery.message.body)
                except pydantic.ValidationError as exc:
                    self.rejected += 1
                    log.warning(
                        "dropped a malformed telemetry report %s from %r: %s",
                        delivery.message.id,
                        delivery.message.source,
                        exc.errors()[0]["msg"] if exc.errors() else exc,
                    )
                else:
                    await self.store.add(report)
                    self.received += 1
                await delivery.ack()
