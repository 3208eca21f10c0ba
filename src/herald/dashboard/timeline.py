"""The timeline: per service and time bin, throughput, latency p50/p99, retries and
dead letters, from the stored telemetry counts.

Latency quantiles come from the summed latency buckets of the bin, so they are the
upper bound of the bucket the quantile falls in (see
:func:`herald.telemetry.records.percentile`), exact across any window and any number
of processes.

>>> rows = [(100.0, "payroll", "acked", 2, [0, 2]), (100.0, "payroll", "retried", 1, [1])]
>>> t = build_timeline(rows, [], now=120.0, window=60.0, bins=3)
>>> t["t"], t["handled"]["payroll"], t["retries"]["payroll"], t["p99"]["payroll"]
([60.0, 80.0, 100.0], [0.0, 0.0, 0.15], [0, 0, 1], [None, None, 2.0])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..telemetry.records import BUCKETS_MS, percentile

__all__ = ["WINDOWS", "build_timeline"]

WINDOWS = {"5m": 300, "15m": 900, "1h": 3600, "6h": 21_600, "24h": 86_400, "7d": 604_800}
"""The windows the page offers, by label (seconds)."""


def build_timeline(
    handled: Iterable[tuple[float, str, str, int, list[int]]],
    published: Iterable[tuple[float, str, int]],
    *,
    now: float,
    window: float,
    bins: int = 60,
) -> dict[str, Any]:
    """Series per service over ``[now - window, now]`` in ``bins`` bins: ``handled``
    and ``published`` per second, ``retries`` and ``dead_letters`` counts, ``p50`` and
    ``p99`` in milliseconds (None where nothing was handled)."""
    width = window / bins
    start = now - window
    times = [start + i * width for i in range(bins)]

    def index(ts: float) -> int | None:
        i = int((ts - start) // width)
        return i if 0 <= i < bins else (bins - 1 if ts == now else None)

    counts: dict[str, list[int]] = {}
    retries: dict[str, list[int]] = {}
    dead: dict[str, list[int]] = {}
    buckets: dict[str, list[list[int]]] = {}
    sent: dict[str, list[int]] = {}
    for ts, service, outcome, count, latency in handled:
        i = index(ts)
        if i is None:
            continue
        counts.setdefault(service, [0] * bins)[i] += count
        retries.setdefault(service, [0] * bins)
        dead.setdefault(service, [0] * bins)
        if outcome == "retried":
            retries[service][i] += count
        elif outcome == "dead-lettered":
            dead[service][i] += count
        summed = buckets.setdefault(service, [[0] * (len(BUCKETS_MS) + 1) for _ in range(bins)])[i]
        for b, n in enumerate(latency[: len(summed)]):
            summed[b] += n
    for ts, service, count in published:
        i = index(ts)
        if i is not None:
            sent.setdefault(service, [0] * bins)[i] += count
    services = sorted(set(counts) | set(sent))
    return {
        "t": times,
        "window": window,
        "services": services,
        "handled": {s: [round(n / width, 3) for n in v] for s, v in counts.items()},
        "published": {s: [round(n / width, 3) for n in v] for s, v in sent.items()},
        "retries": retries,
        "dead_letters": dead,
        "p50": {s: [percentile(b, 0.5) for b in v] for s, v in buckets.items()},
        "p99": {s: [percentile(b, 0.99) for b in v] for s, v in buckets.items()},
    }
