"""Queue statistics from JetStream's consumer info (:class:`herald.QueueInspection`).

A queue is two durable consumers of the same name (events and replay stream); its
counts are theirs added up:

- ``depth``: ``num_pending``, the messages matching the queue not yet delivered.
- ``in_flight``: ``num_ack_pending``, delivered and not acked. A retry waiting out
  its delay is a ``nak`` JetStream keeps in this set until it redelivers, so it is
  counted here, not in ``depth``: the server does not tell the two apart.
- ``consumers``: the consume loops pulling from the queue now (in every process),
  counted by the pull requests JetStream holds for them: each keeps one standing on
  the queue's replay consumer at all times. A process that died stops counting when
  its request expires (15 seconds).
- ``oldest_age``: seconds since the oldest message the queue has not acked was
  stored (the first one after the consumer's ack floor); 0 when nothing is pending
  or unacked.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime

from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from ...capabilities import QueueStats
from .errors import TABLE
from .topology import QUEUE_DESCRIPTION, Topology, consumer_name

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
    for queue in sorted(known):
        name = known[queue]
        events = await topology.consumer_info(streams.events, name)
        if events is None or events.config.description not in (None, QUEUE_DESCRIPTION + queue):
            continue
        replay = await topology.consumer_info(streams.replay, name)
        parts = [(streams.events, events)]
        if replay is not None:
            parts.append((streams.replay, replay))
        ages = [await _oldest_age(js, stream, info) for stream, info in parts]
        found.append(
            QueueStats(
                queue=queue,
                depth=sum(info.num_pending or 0 for _, info in parts),
                in_flight=sum(info.num_ack_pending or 0 for _, info in parts),
                consumers=max(info.num_waiting or 0 for _, info in parts),
                oldest_age=None if None in ages else max(age or 0.0 for age in ages),
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
