"""The metric families Herald records, created once per registry.

Names follow Prometheus conventions: a ``herald_`` prefix, base units (seconds),
``_total`` on counters. Labels are bounded by the code, never by traffic: service,
queue, handler, event type, outcome, error type; never a message id or a key.

In multi-process mode (``PROMETHEUS_MULTIPROC_DIR`` set before the first import of
``prometheus_client``) each process writes its own files and a scrape adds them up:
counters and histograms sum, the in-flight gauge sums over live processes, and the
broker's view (queue depth, outbox backlog) takes the most recent reading of any
process, since every process sees the same broker.

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> instruments_for(registry) is instruments_for(registry)
True
>>> sorted(n for n in registry._names_to_collectors if n.endswith("_total"))[:3]
['herald_dead_letters_total', 'herald_deliveries_handled_total', 'herald_messages_published_total']
"""

from __future__ import annotations

import threading
import weakref

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["DURATION_BUCKETS", "Instruments", "instruments_for"]

DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Seconds: from a millisecond (an in-memory handler) to a minute (a slow batch job)."""


class Instruments:
    """Every Herald metric family, registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        handler = ("service", "queue", "handler")
        self.published = Counter(
            "herald_messages_published",
            "Messages published, by event type and outcome (confirmed or failed).",
            ("event_type", "outcome"), registry=r,
        )  # fmt: skip
        self.publish_duration = Histogram(
            "herald_publish_duration_seconds",
            "Time from handing a batch to the broker until it confirmed (or failed).",
            ("outcome",), buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.handled = Counter(
            "herald_deliveries_handled",
            "Deliveries handled, by outcome: acked, retried, dead-lettered or released.",
            (*handler, "outcome"), registry=r,
        )  # fmt: skip
        self.handling_duration = Histogram(
            "herald_handling_duration_seconds",
            "Time a delivery spent in the handler chain (decoding and middleware included).",
            (*handler, "outcome"), buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "herald_deliveries_in_flight",
            "Deliveries being handled right now.",
            ("service", "queue"), multiprocess_mode="livesum", registry=r,
        )  # fmt: skip
        self.retries = Counter(
            "herald_retries",
            "Deliveries that failed and were scheduled for another attempt.",
            handler, registry=r,
        )  # fmt: skip
        self.dead_letters = Counter(
            "herald_dead_letters",
            "Deliveries moved to the service's dead-letter queue, by error type.",
            (*handler, "error_type"), registry=r,
        )  # fmt: skip
        self.rpc_calls = Counter(
            "herald_rpc_calls",
            "RPC calls made, by request type and outcome (ok, error, timeout or failed).",
            ("request_type", "outcome"), registry=r,
        )  # fmt: skip
        self.rpc_duration = Histogram(
            "herald_rpc_duration_seconds",
            "Time from sending a request until its reply arrived (or the call failed).",
            ("request_type",), buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "herald_queue_depth",
            "Messages waiting in a queue (retries waiting out their delay too).",
            ("queue",), multiprocess_mode="mostrecent", registry=r,
        )  # fmt: skip
        self.queue_in_flight = Gauge(
            "herald_queue_in_flight",
            "Messages delivered from a queue and not yet settled, as the broker sees it.",
            ("queue",), multiprocess_mode="mostrecent", registry=r,
        )  # fmt: skip
        self.queue_consumers = Gauge(
            "herald_queue_consumers",
            "Consumers attached to a queue.",
            ("queue",), multiprocess_mode="mostrecent", registry=r,
        )  # fmt: skip
        self.queue_oldest_age = Gauge(
            "herald_queue_oldest_message_age_seconds",
            "How long the oldest waiting message of a queue has waited.",
            ("queue",), multiprocess_mode="mostrecent", registry=r,
        )  # fmt: skip
        self.inspected_at = Gauge(
            "herald_queue_inspection_timestamp_seconds",
            "Unix time of the last successful reading of the queue gauges.",
            multiprocess_mode="max", registry=r,
        )  # fmt: skip
        self.inspection_errors = Counter(
            "herald_queue_inspection_errors",
            "Readings of the queue gauges that failed or timed out.",
            registry=r,
        )  # fmt: skip
        self.outbox_backlog = Gauge(
            "herald_outbox_backlog",
            "Events staged in an outbox and not yet published.",
            ("outbox",), multiprocess_mode="mostrecent", registry=r,
        )  # fmt: skip
        self.outbox_lag = Gauge(
            "herald_outbox_lag_seconds",
            "Age of the oldest event staged in an outbox and not yet published (0 when none).",
            ("outbox",), multiprocess_mode="mostrecent", registry=r,
        )  # fmt: skip


_made: weakref.WeakKeyDictionary[CollectorRegistry, Instruments] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def instruments_for(registry: CollectorRegistry | None = None) -> Instruments:
    """The instruments of ``registry`` (default: the global one), made on first use."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        made = _made.get(registry)
        if made is None:
            made = _made[registry] = Instruments(registry)
        return made
