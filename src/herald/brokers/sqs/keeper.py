"""The heartbeat: keeping held messages invisible, and consumers visible.

Every third of the visibility timeout the keeper extends, with batched
``ChangeMessageVisibility`` calls, every message a consumer of this broker holds
whose visibility runs out within two thirds of it: those handed out and not yet
settled (a handler still running, a keyed delivery the runtime retries in process),
those received and not yet handed out, and exclusive queues' lock tokens. A process
that dies stops extending: SQS makes its messages visible again when their
visibility runs out, and counts the next receive.

The same beat renews each consumer's presence: a queue tag
``herald-consumer-<id>`` whose value is when it expires (Unix seconds), read by
queue inspection as the consumer count and removed when the consumer stops.
Expired tags of consumers that died are removed by the next consumer to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from ...errors import BrokerError, ErrorTable
from ...tasks import cancel_and_wait
from .delivery import Held, Lease, Settler
from .settings import SQSSettings

__all__ = ["CONSUMER", "Keeper", "live_consumers"]

log = logging.getLogger("herald.brokers.sqs")
CONSUMER = "herald-consumer-"


def live_consumers(tags: dict[str, str], now: float | None = None) -> int:
    """How many consumer tags have not expired."""
    now = time.time() if now is None else now
    return sum(1 for k, v in tags.items() if k.startswith(CONSUMER) and _expiry(v) > now)


def _expiry(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


class Keeper:
    """Extends the visibility of what this broker's consumers hold; renews presence."""

    def __init__(
        self, sqs: Any, settings: SQSSettings, settler: Settler, table: ErrorTable
    ) -> None:
        self._sqs = sqs
        self._settings = settings
        self._settler = settler
        self._table = table
        self._leases: dict[Lease, str] = {}
        self._task: asyncio.Task[None] | None = None
        self.interval = max(0.2, settings.visibility / 3)

    @property
    def ttl(self) -> float:
        """How long a presence tag stays valid unrenewed."""
        return max(3.0, 3 * self.interval)

    async def attach(self, lease: Lease, tags: dict[str, str]) -> None:
        """Start keeping ``lease``; announce it on its queue (tags: the queue's now)."""
        consumer = f"{CONSUMER}{uuid.uuid4().hex[:12]}"
        self._leases[lease] = consumer
        expired = [
            k for k, v in tags.items() if k.startswith(CONSUMER) and _expiry(v) < time.time()
        ]
        with contextlib.suppress(BrokerError), self._table.converting("announcing a consumer"):
            if expired:
                await self._sqs.untag_queue(QueueUrl=lease.url, TagKeys=expired)
            await self._announce(lease, consumer)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._beat(), name="herald:sqs:keeper")

    async def detach(self, lease: Lease) -> None:
        """Stop announcing ``lease`` (what it still holds is kept until settled)."""
        consumer = self._leases.get(lease)
        if consumer is None:
            return
        lease.closed = True
        if not lease.held and lease.token is None:
            del self._leases[lease]
        with contextlib.suppress(BrokerError), self._table.converting("removing a consumer"):
            await self._sqs.untag_queue(QueueUrl=lease.url, TagKeys=[consumer])

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        self._leases.clear()

    async def _announce(self, lease: Lease, consumer: str) -> None:
        expiry = f"{time.time() + self.ttl:.0f}"
        await self._sqs.tag_queue(QueueUrl=lease.url, Tags={consumer: expiry})

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        announced = loop.time()
        while self._leases:
            await asyncio.sleep(self.interval)
            now = loop.time()
            due: list[tuple[Lease, Held]] = []
            for lease in list(self._leases):
                if lease.closed and not lease.held and lease.token is None:
                    del self._leases[lease]
                    continue
                due += [
                    (lease, h) for h in lease.held.values() if h.deadline - now < 2 * self.interval
                ]
                if lease.token is not None and lease.token.deadline - now < 2 * self.interval:
                    due.append((lease, lease.token))
            calls = [self._extend(lease, held, now) for lease, held in due]
            if now - announced >= self.ttl / 3:
                announced = now
                calls += [
                    self._renew(lease, consumer)
                    for lease, consumer in self._leases.items()
                    if not lease.closed
                ]
            await asyncio.gather(*calls)

    async def _extend(self, lease: Lease, held: Held, now: float) -> None:
        if lease.held.get(held.receipt) is not held and lease.token is not held:
            return  # settled meanwhile: its settlement decides its visibility
        try:
            await self._settler.change(held, self._settings.visibility)
        except BrokerError as exc:
            log.debug("could not extend the visibility of a message: %s", exc)
        else:
            held.deadline = now + self._settings.visibility

    async def _renew(self, lease: Lease, consumer: str) -> None:
        try:
            with self._table.converting("renewing a consumer's presence"):
                await self._announce(lease, consumer)
        except BrokerError as exc:
            log.debug("could not renew a consumer's presence: %s", exc)
