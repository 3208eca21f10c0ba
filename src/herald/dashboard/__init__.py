"""``herald dashboard``: watch events flow between services, live, and act on dead letters.

Pages (FastAPI, Jinja2, htmx over server-sent events; no CDN):

- **Flow**: publishing services, event types and consuming queues as a live graph,
  with rates on the edges and, per queue, depth, in flight, consumers and the age
  of the oldest message (from :class:`herald.capabilities.QueueInspection`).
- **Timeline**: throughput, latency p50/p99, retries and dead letters per service.
- **Dead letters**: grouped by failure; inspect, edit and replay, replay a group, purge.
- **Message trail**: where a message went, by id, correlation id or trace id.
- **Demo controls** when ``herald demo`` hosts it: stop and start each service
  (:class:`ServiceControls`).

Data: queue stats from the broker, everything else from the telemetry reports the
services publish (:mod:`herald.telemetry`), kept in an embedded SQLite file
(``./var/dashboard.db`` by default) so history outlives a dashboard restart.
Importing this package needs no web framework; serving needs ``herald[dashboard]``.
"""

from .controls import ServiceControls, ServiceState

__all__ = ["ServiceControls", "ServiceState"]
