"""``QueueInspection``: counts per queue, from RabbitMQ.

Without the management plugin, AMQP itself tells a queue's ready messages and
consumers (a passive ``queue.declare``), and the messages waiting out a retry delay
(the same for each ``<queue>.retry.<ms>ms``); it cannot tell how many are delivered
and unacked, nor the age of the oldest, nor list queues. With
``?management=http://host:15672`` the stats come from the management HTTP API
(``messages_ready``, ``messages_unacknowledged``, ``consumers``,
``head_message_timestamp``), which also lists the namespace's queues. Those stats
are the management plugin's: up to its ``collect_statistics_interval`` (5 s by
default) old, and the head timestamp is the message's ``timestamp`` property (whole
seconds, the time the event was created). A classic queue's consumers are counted
live all the same (a passive ``queue.declare``, which counts the waiting consumers
of an exclusive queue too); over AMQP a quorum queue counts only its active one, so
its count is the management API's.

The HTTP client is the standard library's, run in a thread; redirects are not
followed (they would carry the credentials elsewhere).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
import time
import urllib.request
from collections import defaultdict
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import quote

from ...capabilities import QueueStats
from ...errors import CapabilityError
from .connection import AMQPConnection
from .settings import AMQPSettings, Management
from .topology import DELAY_BUCKETS_MS, retry_queue_name

__all__ = ["Inspector"]

_RETRY = re.compile(r"(?P<queue>.+)\.retry\.\d+ms")
_COLUMNS = "name,messages_ready,messages_unacknowledged,messages,consumers,head_message_timestamp"


class Inspector:
    """Reads queue stats over AMQP, or from the management API when configured."""

    def __init__(self, settings: AMQPSettings, connection: AMQPConnection) -> None:
        self._settings = settings
        self._connection = connection

    async def inspect(self, queues: Collection[str] | None) -> list[QueueStats]:
        management = self._settings.management
        if management is not None:
            return await self._from_rows(await self._fetch(management), queues)
        if queues is None:
            raise CapabilityError(
                "listing every queue of a namespace needs RabbitMQ's management API: add "
                "management=http://HOST:15672 to the broker URL (and enable the "
                "rabbitmq_management plugin), or name the queues to inspect"
            )
        names = sorted(set(queues))
        group = 1 + len(DELAY_BUCKETS_MS)  # the queue, then its retry queues
        probes = []
        for name in names:
            server = self._settings.name(name)
            probes += [server, *(retry_queue_name(server, ms) for ms in DELAY_BUCKETS_MS)]
        found = await self._connection.probe(probes)
        stats = []
        for index, name in enumerate(names):
            main, *waiting = found[index * group : (index + 1) * group]
            if main is not None:
                ready, consumers = main
                depth = ready + sum(w[0] for w in waiting if w is not None)
                stats.append(QueueStats(name, depth, None, consumers, 0.0 if ready == 0 else None))
        return stats

    async def _fetch(self, management: Management) -> list[Mapping[str, Any]]:
        vhost = quote(self._settings.vhost, safe="")
        url = f"{management.base}/api/queues/{vhost}?columns={_COLUMNS}"
        with self._connection.errors.converting(f"reading queue stats from {management.base}"):
            rows = await asyncio.to_thread(self._get, url, management)
        return [row for row in rows if isinstance(row, Mapping)] if isinstance(rows, list) else []

    def _get(self, url: str, management: Management) -> Any:
        secret = f"{management.username}:{management.password}".encode()
        request = urllib.request.Request(url)
        request.add_header("Authorization", "Basic " + base64.b64encode(secret).decode())
        request.add_header("Accept", "application/json")
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if url.startswith("https:"):
            handlers.append(urllib.request.HTTPSHandler(context=self._tls()))
        opener = urllib.request.build_opener(*handlers)
        with opener.open(request, timeout=self._settings.connect_timeout) as response:
            return json.load(response)

    def _tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self._settings.cafile)
        if not self._settings.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _from_rows(
        self, rows: list[Mapping[str, Any]], queues: Collection[str] | None
    ) -> list[QueueStats]:
        prefix = f"{self._settings.namespace}." if self._settings.namespace else ""
        own = {str(row.get("name", "")): row for row in rows}
        retrying: dict[str, int] = defaultdict(int)
        for name, row in own.items():
            match = _RETRY.fullmatch(name)
            if match:
                retrying[match["queue"]] += _count(row, "messages")
        if queues is None:
            registry = self._settings.name("herald-registry")
            names = [
                self._settings.herald_name(n)
                for n in own
                if n.startswith(prefix)
                and not n.startswith("amq.")
                and n != registry
                and not _RETRY.fullmatch(n)
                and not n.endswith(".dlq")
            ]
        else:
            names = [q for q in set(queues) if self._settings.name(q) in own]
        names = sorted(names)
        servers = [self._settings.name(queue) for queue in names]
        live = self._settings.queue_type == "classic"  # counts waiting consumers too
        asked = [s for s in servers if live or "messages_ready" not in own[s]]
        counts = await self._connection.probe(asked) if asked else []
        probed = dict(zip(asked, counts, strict=True))
        now = time.time()
        stats = []
        for queue, server in zip(names, servers, strict=True):
            row = own[server]
            found = probed.get(server)
            if "messages_ready" not in row:  # too new to have stats yet: ask the queue
                if found is not None:
                    ready, consumers = found
                    depth = ready + retrying.get(server, 0)
                    stats.append(QueueStats(queue, depth, None, consumers, None if ready else 0.0))
                continue
            ready = _count(row, "messages_ready")
            age = _age(now, row.get("head_message_timestamp")) if ready else 0.0
            stats.append(
                QueueStats(
                    queue=queue,
                    depth=ready + retrying.get(server, 0),
                    in_flight=_count(row, "messages_unacknowledged"),
                    consumers=found[1] if found is not None else _count(row, "consumers"),
                    oldest_age=age,
                )
            )
        return stats


def _count(row: Mapping[str, Any], field: str) -> int:
    value = row.get(field)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _age(now: float, timestamp: object) -> float | None:
    """Seconds since a head message's ``timestamp``; None when it has none."""
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        return max(0.0, now - timestamp)
    return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
