"""The flow graph: who publishes which event types, which queues consume them, how fast.

Where each part comes from:

- **queues** (and so the consuming services, ``<service>.<name>``): the broker, through
  :class:`herald.capabilities.QueueInspection`: depth, in flight, consumers and age of
  the oldest message, for every queue, whether or not its service runs now. A value
  the broker cannot report is ``None`` and shown as "not reported".
- **publishers** and the **rates** on the edges: the telemetry reports of the
  processes (:mod:`herald.telemetry`): a publisher is a service that reported
  publishing a type in the last hour; rates are per second over the last
  :data:`RATE_WINDOW` seconds.
- A queue's event types: the types its service reported handling from it, else the
  known types its name (the subscription's pattern, by default) matches.

>>> from herald.capabilities import QueueStats
>>> flow = build_flow(
...     [QueueStats("payroll.employee.created", 3, 0, 0, 12.5)],
...     published=[("hr", "employee.created", 5)],
...     recent_published={("hr", "employee.created"): 2.0},
...     handled=[],
...     recent_handled={},
... )
>>> [(q.queue, q.state, q.depth) for q in flow.queues]
[('payroll.employee.created', 'stopped', 3)]
>>> uninspected = build_flow(None, published=[], recent_published={},
...                          handled=[("payroll", "payroll.a", "a", 4)], recent_handled={})
>>> [(q.queue, q.state, q.depth, q.handled) for q in uninspected.queues]
[('payroll.a', 'not reported', None, 4)]
>>> for edge in sorted(flow.edges, key=lambda e: e.source):
...     print(edge.source, "->", edge.target, edge.rate)
pub:hr -> type:employee.created 2.0
type:employee.created -> queue:payroll.employee.created None
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from ..capabilities import QueueStats
from ..telemetry.records import REPORT_TYPE
from ..topic import matches

__all__ = [
    "HIDDEN_SERVICES",
    "RATE_WINDOW",
    "Edge",
    "Flow",
    "QueueNode",
    "build_flow",
    "service_of",
]

RATE_WINDOW = 10.0
"""Seconds over which edge rates are averaged."""
HIDDEN_SERVICES = ("dashboard-", "tail-", "reply-")
"""Transient queues: dashboards', ``herald tail``'s and RPC reply channels."""


def service_of(queue: str) -> str:
    """The service a queue belongs to (queue names are ``<service>.<name>``)."""
    return queue.partition(".")[0]


@dataclass
class QueueNode:
    """One consuming queue, as its broker reports it."""

    queue: str
    stats: QueueStats | None
    dead_letters: int | None = None
    types: set[str] = field(default_factory=set)
    handled: int = 0
    """Deliveries its service reported handling in the period the graph covers."""

    @property
    def service(self) -> str:
        return service_of(self.queue)

    @property
    def name(self) -> str:
        return self.queue.partition(".")[2]

    @property
    def depth(self) -> int | None:
        return None if self.stats is None else self.stats.depth

    @property
    def state(self) -> str:
        """``running`` (consumers attached), ``stopped`` (none) or ``not reported``."""
        consumers = None if self.stats is None else self.stats.consumers
        if consumers is None:
            return "not reported"
        return "running" if consumers > 0 else "stopped"


@dataclass(frozen=True)
class Edge:
    """``source`` publishes to (or feeds) ``target``; ``rate`` per second, or None
    when no telemetry reports it."""

    source: str
    target: str
    rate: float | None


@dataclass
class Flow:
    """Publishers, event types, queues and the edges between them."""

    publishers: list[str]
    types: list[str]
    queues: list[QueueNode]
    edges: list[Edge]
    inspected: bool = True


def _visible(queue: str, hidden: Collection[str]) -> bool:
    return (
        queue not in hidden
        and not queue.endswith(".dlq")
        and not service_of(queue).startswith(HIDDEN_SERVICES)
    )


def build_flow(
    stats: Iterable[QueueStats] | None,
    *,
    published: Iterable[tuple[str, str, int]],
    recent_published: Mapping[tuple[str, str], float],
    handled: Iterable[tuple[str, str, str, int]],
    recent_handled: Mapping[tuple[str, str], float],
    hidden: Collection[str] = (),
    dead_letter_counts: Mapping[str, int] | None = None,
) -> Flow:
    """The graph from queue stats (None: the broker cannot inspect queues), the
    (service, type, count) published and (service, queue, type, count) handled in the
    period the graph covers, and recent rates keyed (service, type) and (queue, type).
    A service's dead letters are its ``.dlq`` queue's depth, else its entry in
    ``dead_letter_counts``, else not reported (None)."""
    queues: dict[str, QueueNode] = {}
    dead_letters: dict[str, int] = {}
    for item in stats or ():
        if item.queue.endswith(".dlq"):
            dead_letters[service_of(item.queue)] = item.depth
        elif _visible(item.queue, hidden):
            queues[item.queue] = QueueNode(item.queue, item)
    publishers: set[str] = set()
    types: set[str] = set()
    edges: dict[tuple[str, str], float | None] = {}
    for service, type_, _ in published:
        if type_ == REPORT_TYPE:
            continue
        publishers.add(service)
        types.add(type_)
        edges[(f"pub:{service}", f"type:{type_}")] = recent_published.get((service, type_))
    for _, queue, type_, count in handled:
        if type_ == REPORT_TYPE or not _visible(queue, hidden):
            continue
        types.add(type_)
        node = queues.setdefault(queue, QueueNode(queue, None))
        node.types.add(type_)
        node.handled += count
    for node in queues.values():
        if not node.types:
            node.types = {t for t in types if matches(node.name, t)} or {node.name}
            types |= node.types
        node.dead_letters = dead_letters.get(
            node.service, (dead_letter_counts or {}).get(node.service)
        )
        for type_ in node.types:
            edges[(f"type:{type_}", f"queue:{node.queue}")] = recent_handled.get(
                (node.queue, type_)
            )
    ordered_publishers = sorted(publishers)
    first_publisher = {
        type_: min(
            (i for i, p in enumerate(ordered_publishers) if (f"pub:{p}", f"type:{type_}") in edges),
            default=len(ordered_publishers),
        )
        for type_ in types
    }
    ordered_types = sorted(types, key=lambda t: (first_publisher[t], t))
    rank = {type_: index for index, type_ in enumerate(ordered_types)}
    return Flow(
        publishers=ordered_publishers,
        types=ordered_types,
        queues=sorted(
            queues.values(),
            key=lambda q: (min((rank[t] for t in q.types), default=len(rank)), q.queue),
        ),
        edges=[Edge(source, target, rate) for (source, target), rate in edges.items()],
        inspected=stats is not None,
    )
