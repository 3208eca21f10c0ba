"""Recurring schedules a service declares: ``@svc.every(timedelta(weeks=1), name=...)``.

Time is cut into slots of ``period`` from an ``anchor`` (default the Unix epoch, UTC):
slot ``n`` is due at ``anchor + n * period``. Every running process of the service
(each replica) publishes, at each slot's due time, an :class:`Occurrence` to the
schedule's own queue ``<service>.<name>``, with an id derived from (service, name,
period, slot) alone: two replicas, or one replica restarted within the slot, publish
the *same* message, and the handler takes it once through an inbox
(:class:`herald.inbox.Inbox` skips an id it has seen). A process starting mid-slot
publishes the current slot at once: a slot missed while no replica ran fires once,
when the first one starts, never once per missed slot.

Why not a chain of delayed messages (each occurrence scheduling the next)? Two
replicas starting together would each start a chain, and a chain lost with a crash
between handling and scheduling stops for good; deterministic ids need no
coordination and no state but the inbox the handler already has.

>>> from datetime import timedelta
>>> weekly = Recurrence("giftcards", "topup", timedelta(weeks=1))
>>> weekly.event_type, weekly.slot_at(datetime(2026, 1, 1, tzinfo=UTC))
('herald.every.giftcards.topup', 2922)
>>> weekly.due(2922)
datetime.datetime(2026, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)
>>> weekly.message_id(2922) == Recurrence("giftcards", "topup", timedelta(weeks=1)).message_id(2922)
True
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from .context import Publisher
from .errors import ConfigurationError, HeraldError
from .event import Event
from .tasks import cancel_and_wait
from .topic import validate_pattern

__all__ = ["Occurrence", "Recurrence", "Ticker"]

log = logging.getLogger("herald.recurrence")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_IDS = uuid.UUID("5f0c2d8e-7a43-4f59-9d1b-3c2e8a6b1f47")
REPUBLISH_DELAY = 1.0
"""Seconds before a failed publish of an occurrence is tried again."""


class Occurrence(Event, type="herald.occurrence"):
    """One slot of a recurring schedule, as its handler receives it.

    ``schedule`` is ``<service>.<name>``; ``slot`` counts periods from the anchor;
    ``due`` is when the slot began. The message id is the same for every replica
    that publishes the slot (dedupe with an inbox, or on ``slot``).
    """

    schedule: str
    slot: int
    due: datetime


@dataclass(frozen=True, slots=True)
class Recurrence:
    """A schedule: ``period`` long slots from ``anchor``, for one service's handler."""

    service: str
    name: str
    period: timedelta
    anchor: datetime = field(default=EPOCH)

    def __post_init__(self) -> None:
        if self.period.total_seconds() <= 0:
            raise ConfigurationError(f"schedule {self.name!r}: the period must be positive")
        if self.anchor.tzinfo is None:
            raise ConfigurationError(f"schedule {self.name!r}: the anchor must be time-zone aware")
        try:
            validate_pattern(self.event_type)
        except ValueError as exc:
            raise ConfigurationError(f"schedule {self.name!r}: {exc}") from None
        if "*" in self.name or "#" in self.name or "." in self.name:
            raise ConfigurationError(f"schedule name {self.name!r}: one word, no wildcards")

    @property
    def event_type(self) -> str:
        return f"herald.every.{self.service}.{self.name}"

    @property
    def seconds(self) -> float:
        return self.period.total_seconds()

    def slot_at(self, when: datetime | float) -> int:
        """The slot running at ``when`` (a datetime or Unix seconds)."""
        at = when.timestamp() if isinstance(when, datetime) else when
        return math.floor((at - self.anchor.timestamp()) / self.seconds)

    def due(self, slot: int) -> datetime:
        return self.anchor + slot * self.period

    def message_id(self, slot: int) -> str:
        """The id every replica gives the occurrence of ``slot``."""
        name = f"{self.service}/{self.name}/{self.seconds!r}/{self.anchor.isoformat()}/{slot}"
        return uuid.uuid5(_IDS, name).hex


class Ticker:
    """Publishes the occurrences of a service's schedules while its worker runs."""

    def __init__(self, recurrences: Sequence[Recurrence], publisher: Publisher) -> None:
        self.recurrences = tuple(recurrences)
        self._publisher = publisher
        self._tasks: list[asyncio.Task[None]] = []
        self.published = 0
        """Occurrences this process published."""

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(r), name=f"herald:every:{r.service}.{r.name}")
            for r in self.recurrences
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            await cancel_and_wait(task)

    async def _run(self, recurrence: Recurrence) -> None:
        slot = recurrence.slot_at(time.time())
        while True:
            await self._publish(recurrence, slot)
            wait = recurrence.due(slot + 1).timestamp() - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            # late by more than a period (a suspended host): the slot now running, once
            slot = max(slot + 1, recurrence.slot_at(time.time()))

    async def _publish(self, recurrence: Recurrence, slot: int) -> None:
        occurrence = Occurrence(
            schedule=f"{recurrence.service}.{recurrence.name}", slot=slot, due=recurrence.due(slot)
        )
        message = self._publisher.message(occurrence, key=recurrence.name)
        message = replace(
            message,
            id=recurrence.message_id(slot),
            type=recurrence.event_type,
            time=occurrence.due,
        )
        while True:
            try:
                await self._publisher.send([message])
            except HeraldError as exc:
                name = occurrence.schedule
                if recurrence.slot_at(time.time()) != slot:
                    log.warning("schedule %s: slot %d not published: %s", name, slot, exc)
                    return
                log.warning("schedule %s: publishing slot %d failed: %s", name, slot, exc)
                await asyncio.sleep(REPUBLISH_DELAY)
            else:
                self.published += 1
                return
