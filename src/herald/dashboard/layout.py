"""Positions of the flow graph's boxes and edges, for an SVG drawn by the template.

Three columns: publishing services, event types, consuming queues (one box per
queue, named by its service). Each column is stacked from the top.

>>> from herald.capabilities import QueueStats
>>> from .flow import build_flow
>>> flow = build_flow([QueueStats("payroll.a", 0, 0, 1, 0.0)], published=[("hr", "a", 1.0)],
...                   recent_published={}, handled=[], recent_handled={})
>>> drawing = layout(flow)
>>> [box.id for box in drawing.boxes], len(drawing.paths)
(['pub:hr', 'type:a', 'queue:payroll.a'], 2)
"""

from __future__ import annotations

from dataclasses import dataclass

from .flow import Flow, QueueNode

__all__ = ["Box", "Drawing", "Path", "layout"]

_COLUMNS = (20.0, 330.0, 640.0)
_WIDTHS = (220.0, 220.0, 300.0)
_SMALL, _LARGE, _GAP, _TOP = 44.0, 74.0, 18.0, 20.0


@dataclass(frozen=True)
class Box:
    """A node: ``kind`` is ``publisher``, ``type`` or ``queue``."""

    id: str
    kind: str
    label: str
    x: float
    y: float
    width: float
    height: float
    queue: QueueNode | None = None


@dataclass(frozen=True)
class Path:
    """An edge from the right side of one box to the left side of another."""

    d: str
    label: str
    label_x: float
    label_y: float
    active: bool


@dataclass(frozen=True)
class Drawing:
    boxes: list[Box]
    paths: list[Path]
    width: float
    height: float


def _rate(rate: float | None) -> str:
    if rate is None:
        return ""
    return f"{rate:.1f}/s" if rate < 100 else f"{rate:.0f}/s"


def layout(flow: Flow) -> Drawing:
    """Boxes and edges of ``flow``."""
    boxes: list[Box] = []
    columns: list[list[tuple[str, str, str, QueueNode | None]]] = [
        [(f"pub:{p}", "publisher", p, None) for p in flow.publishers],
        [(f"type:{t}", "type", t, None) for t in flow.types],
        [(f"queue:{q.queue}", "queue", q.service, q) for q in flow.queues],
    ]
    bottom = _TOP
    for index, column in enumerate(columns):
        y = _TOP
        for id_, kind, label, queue in column:
            height = _LARGE if kind == "queue" else _SMALL
            boxes.append(Box(id_, kind, label, _COLUMNS[index], y, _WIDTHS[index], height, queue))
            y += height + _GAP
        bottom = max(bottom, y)
    where = {box.id: box for box in boxes}
    paths = []
    for edge in flow.edges:
        start, end = where.get(edge.source), where.get(edge.target)
        if start is None or end is None:
            continue
        x1, y1 = start.x + start.width, start.y + start.height / 2
        x2, y2 = end.x, end.y + end.height / 2
        middle = (x1 + x2) / 2
        paths.append(
            Path(
                d=f"M{x1:.0f},{y1:.0f} C{middle:.0f},{y1:.0f} {middle:.0f},{y2:.0f} "
                f"{x2:.0f},{y2:.0f}",
                label=_rate(edge.rate),
                label_x=middle,
                label_y=(y1 + y2) / 2 - 4,
                active=bool(edge.rate),
            )
        )
    return Drawing(boxes, paths, _COLUMNS[2] + _WIDTHS[2] + 20, bottom + _TOP)
