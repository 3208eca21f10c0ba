"""Backfill: a service added later starts with the events it missed.

``@svc.on(Event, backfill=True)`` (or ``since=`` an aware datetime) asks that the
handler's queue, when it is first created, start with the events the broker
retained, then go on with live ones:

>>> import asyncio, tempfile, herald
>>> class Hired(herald.Event, type="doc.hired"):
...     guid: str
>>> async def story(url: str) -> list[str]:
...     async with herald.connect(url) as bus:
...         await bus.publish(Hired(guid="e1"), key="e1")  # before the service exists
...         cards, seen = herald.Service("cards"), []
...         @cards.on(Hired, backfill=True)
...         async def issue(event: Hired) -> None:
...             seen.append(event.guid)
...         worker = await bus.start(cards)
...         await bus.publish(Hired(guid="e2"), key="e2")
...         while len(seen) < 2:
...             await asyncio.sleep(0.02)
...         await worker.stop()
...         return seen
>>> with tempfile.TemporaryDirectory() as tmp:
...     asyncio.run(story(f"sqlite:///{tmp}/herald.db?retain=7d"))
['e1', 'e2']

How it is exactly once: the broker creates the queue and fills it with history in
one step that has a single cut in the broker's one log (:class:`RetainedHistory`):
SQLite copies the retained rows into the new queue, unbound, in steps, and binds it
in the transaction that copies the last ones, so every publish commits either
before (history) or after (live); NATS creates
the queue's consumer on the events stream with a start time instead of "new";
Kafka commits the new group's first offsets at the oldest retained records instead
of the end; RabbitMQ (``retain=``) copies its events stream up to a cut marker into
a queue the consumer drains first, leaving out what the new queue holds. History and
live events then sit in one sequence, so the order per key holds across the seam and
nothing comes twice. The queue's existence is the durable
record that backfill was done: a restart, or a second replica starting at the same
moment (the creation is atomic on the broker), finds the queue and replays nothing.
A queue that existed before ``backfill=True`` was added gets nothing either.

A broker that keeps no history (memory, Redis, SQS; RabbitMQ and SQLite without
``retain=``) fails at service
start with :class:`herald.CapabilityError` naming it, before any queue is declared.
"""

from __future__ import annotations

import logging

from .broker import Broker
from .capabilities import RetainedHistory
from .errors import CapabilityError
from .handler import Handler

__all__ = ["declare_queues"]

log = logging.getLogger("herald.backfill")


async def declare_queues(broker: Broker, service: str, handlers: list[Handler]) -> None:
    """Declare each handler's queue, backfilling those whose handler asks for it.

    Raises :class:`herald.CapabilityError` before declaring anything when a handler
    asks for backfill and ``broker`` keeps no history.
    """
    wanting = [h.subscription.queue for h in handlers if h.backfill]
    if wanting and not isinstance(broker, RetainedHistory):
        scheme = broker.schemes[0] if broker.schemes else "?"
        raise CapabilityError(
            f"service {service} asks for backfill on {', '.join(wanting)}, but the "
            f"{scheme}:// broker ({type(broker).__name__}) keeps no history to replay; "
            "use one that does (sqlite or amqp with ?retain=, nats, kafka)"
        )
    for handler in handlers:
        subscription = handler.subscription
        if not handler.backfill:
            await broker.declare(subscription)
            continue
        assert isinstance(broker, RetainedHistory)
        count = await broker.backfill(subscription, handler.since)
        log.info(
            "queue %s: backfilled with %d retained event(s)%s",
            subscription.queue,
            count,
            "" if count else " (it existed already, or nothing was retained)",
        )
