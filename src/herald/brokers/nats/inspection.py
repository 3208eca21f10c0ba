"""Queue statistics (:class:`herald.QueueInspection`) from JetStream's consumer info and
what the live processes report (:mod:`.presence`).

A queue is two durable consumers of the same name (events and replay stream). From
JetStream, added up over both: ``num_pending`` (matching, never delivered) and
``num_ack_pending`` (delivered, not acked: held by a consumer, but also given back
with a ``nak`` and not delivered again yet, a release or a retry waiting out its
delay). From the processes, added up over all of them: the consume loops attached and
the messages they hold. So:

- ``in_flight``: the messages the live processes hold (received and not settled), at
  most ``num_ack_pending``.
- ``depth``: ``num_pending`` plus the rest of ``num_ack_pending``: released messages,
  retries waiting, and what a dead process held (counted as waiting once its entry
  expired; JetStream redelivers it after ``ack_wait``).
- ``consumers``: the consume loops of the live processes, standbys of an exclusive
  queue too (a killed process stops counting within :data:`.state.LIVE_TTL`).
- ``oldest_age``: 0 when nothing waits; else seconds since the oldest message the
  queue has not acked was stored (the first after the consumer's ack floor), which
  may be one a consumer holds.

The processes' reports lag their changes by up to :data:`.presence.THROTTLE` seconds
plus a round trip.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime

from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from ...capabilities import QueueStats
from .errors import TABLE
from .presence import Seen, read_presence
from .topology import Topology, consumer_name, queue_of

__all__ = ["inspect_queues"]


async def inspect_queues(
    js: JetStreamContext, topology: Topology, queues: Collection[str] | None
) -> list[QueueStats]:
    """Stats of the named queues (unknown ones left out), or of every queue of the
    namespace, sorted by queue name."""
    streams = topology.names.streams
    if queues is None:
        known = await topology.queues()
    else:
        known = {queue: consumer_name(queue) for queue in set(queues)}
    found = []
    seen: dict[str, Seen] | None = None
    for queue in sorted(known):
        name = known[queue]
        events = await topology.consumer_info(streams.events, name)
        if events is None or queue_of(events.config.description) not in (None, queue):
            continue
        if seen is None:
            seen = await read_presence(await topology.live())
        replay = await topology.consumer_info(streams.replay, name)
        parts = [(streams.events, events)]
        if replay is not None:
            parts.append((streams.replay, replay))
        pending = sum(info.num_pending or 0 for _, info in parts)
        unacked = sum(info.num_ack_pending or 0 for _, info in parts)
        report = seen.get(name, Seen())
        in_flight = min(report.held, unacked)
        depth = pending + unacked - in_flight
        ages = [await _oldest_age(js, stream, info) for stream, info in parts] if depth else []
        found.append(
            QueueStats(
                queue=queue,
                depth=depth,
                in_flight=in_flight,
                consumers=report.consumers,
                oldest_age=None if None in ages else max((age or 0.0 for age in ages), default=0.0),
            )
        )
    return found


async def _oldest_age(js: JetStreamContext, stream: str, info: api.ConsumerInfo) -> float | None:
    if not (info.num_pending or info.num_ack_pending):
        return 0.0
    floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
    with TABLE.converting(f"reading the oldest message of {info.name}"):
        try:
            raw = await js.get_msg(
                stream, seq=(floor or 0) + 1, subject=info.config.filter_subject, next=True
            )
        except NotFoundError:
            return None  # expired (max_age) while counted
    if raw.time is None:
        return None
    return max(0.0, (datetime.now(UTC) - raw.time).total_seconds())
