"""Queue inspection, read from SQS (and CloudWatch) so every process sees the same.

- depth: ``ApproximateNumberOfMessages`` + ``ApproximateNumberOfMessagesDelayed``;
- in flight: ``ApproximateNumberOfMessagesNotVisible``. SQS cannot tell a message a
  consumer holds from one whose retry waits out its delay (both are invisible), so
  retries waiting are counted in flight here, not in depth;
- consumers: the queue's unexpired ``herald-consumer-*`` tags (:mod:`.keeper`),
  standbys of an exclusive queue included;
- oldest age: ``0`` when nothing waits; otherwise the CloudWatch metric
  ``AWS/SQS ApproximateAgeOfOldestMessage`` (one ``GetMetricData`` call for every
  queue; it lags by a minute or more), and None where CloudWatch has no datapoint
  (emulators publish none) or cannot be read.

SQS's counts are approximate: on AWS they settle within about a minute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from ...capabilities import QueueStats
from ...errors import ErrorTable
from .errors import queue_gone
from .keeper import live_consumers
from .topology import NAME, OURS, Topology

__all__ = ["Inspector"]

log = logging.getLogger("herald.brokers.sqs")
_COUNTS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessagesNotVisible",
]


class Inspector:
    """Reads :class:`herald.QueueStats` of a namespace's queues."""

    def __init__(self, sqs: Any, cloudwatch: Any, topology: Topology, table: ErrorTable) -> None:
        self._sqs = sqs
        self._cloudwatch = cloudwatch
        self._topology = topology
        self._table = table

    async def inspect(self, queues: Collection[str] | None = None) -> list[QueueStats]:
        with self._table.converting("inspecting queues"):
            found = await (self._every() if queues is None else self._named(queues))
            read = await asyncio.gather(*(self._read(name, url) for name, url in found))
            stats = [s for s in read if s is not None]
            ages = await self._ages([s for s in stats if s[1].depth > 0])
        return sorted(
            (
                QueueStats(s.queue, s.depth, s.in_flight, s.consumers, ages.get(s.queue, 0.0))
                if s.depth > 0
                else s
                for _, s in stats
            ),
            key=lambda s: s.queue,
        )

    async def _named(self, queues: Collection[str]) -> list[tuple[str, str]]:
        names = self._topology.names
        found = []
        for queue in sorted(set(queues)):
            url = await self._topology.url(names.queue(queue))
            if url is not None:
                found.append((queue, url))
        return found

    async def _every(self) -> list[tuple[str, str]]:
        urls: list[str] = []
        paginator = self._sqs.get_paginator("list_queues")
        prefix = self._topology.names.prefix
        async for page in paginator.paginate(QueueNamePrefix=prefix, MaxResults=1000):
            urls += page.get("QueueUrls") or []
        ours = [url for url in urls if _subscription_queue(url.rsplit("/", 1)[-1])]
        tags = await asyncio.gather(*(self._tags(url) for url in ours))
        return [(t[NAME], url) for url, t in zip(ours, tags, strict=True) if t and NAME in t]

    async def _tags(self, url: str) -> dict[str, str] | None:
        try:
            return await self._topology.tags(url)
        except Exception as exc:
            if queue_gone(exc):
                return None
            raise

    async def _read(self, queue: str, url: str) -> tuple[str, QueueStats] | None:
        try:
            reply, tags = await asyncio.gather(
                self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=_COUNTS),
                self._topology.tags(url),
            )
        except Exception as exc:
            if queue_gone(exc):  # deleted: SQS may list a queue for a minute after
                self._topology.forget(url)
                return None
            raise
        counts = {k: int(v) for k, v in reply.get("Attributes", {}).items()}
        depth = counts.get(_COUNTS[0], 0) + counts.get(_COUNTS[1], 0)
        name = url.rsplit("/", 1)[-1]
        return name, QueueStats(queue, depth, counts.get(_COUNTS[2], 0), live_consumers(tags), 0.0)

    async def _ages(self, stats: list[tuple[str, QueueStats]]) -> dict[str, float | None]:
        """The latest CloudWatch age of the oldest message of each queue, or None."""
        ages: dict[str, float | None] = {s.queue: None for _, s in stats}
        if not stats:
            return ages
        queries = [
            {
                "Id": f"q{n}",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SQS",
                        "MetricName": "ApproximateAgeOfOldestMessage",
                        "Dimensions": [{"Name": "QueueName", "Value": name}],
                    },
                    "Period": 60,
                    "Stat": "Maximum",
                },
            }
            for n, (name, _) in enumerate(stats[:500])
        ]
        now = datetime.now(UTC)
        try:
            reply = await self._cloudwatch.get_metric_data(
                MetricDataQueries=queries,
                StartTime=now - timedelta(minutes=15),
                EndTime=now + timedelta(minutes=1),
                ScanBy="TimestampDescending",
            )
        except Exception as exc:
            log.debug("no CloudWatch metrics for queue ages: %s", exc)
            return ages
        for result in reply.get("MetricDataResults") or ():
            values = result.get("Values") or []
            n = int(str(result.get("Id", "q-1"))[1:])
            if values and 0 <= n < len(stats):
                ages[stats[n][1].queue] = float(values[0])
        return ages


def _subscription_queue(name: str) -> bool:
    """Whether an SQS queue name is one of this adapter's subscription queues."""
    return OURS.fullmatch(name) is not None and name.rsplit("-", 1)[-1].startswith("q")
