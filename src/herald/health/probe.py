"""Liveness and readiness of a process serving Herald services.

*Live*: the process answers at all (an orchestrator restarts it when not).
*Ready*: the broker connection is up (a broker with
:class:`herald.capabilities.ConnectionStatus` says so; others are taken as connected
while open) and every consumer of every expected service is running: subscribed,
not waiting to subscribe again after a failure, not stopped. While a connection
reconnects, or a service shuts down, the process is not ready, so an orchestrator
stops sending it work (or drains it) without restarting it. Shutting down starts
with draining (running handlers finish, no new deliveries are taken): each of the
service's queues then reads ``"draining"``, from the moment the drain begins until
the worker has stopped.

>>> import asyncio, herald
>>> svc = herald.Service("probed")
>>> @svc.on("thing.happened")
... async def noop(message: herald.Message) -> None: ...
>>> async def main() -> list[tuple[bool, dict[str, str]]]:
...     async with herald.connect("memory://probe-doctest") as bus:
...         health = Health(bus, services=["probed"])
...         before = health.ready()
...         worker = await bus.start(svc)
...         await asyncio.sleep(0)  # the consumer task subscribes
...         during = health.ready()
...         await worker.stop()
...         after = health.ready()
...     return [(p.ok, p.checks) for p in (before, during, after)]
>>> for ok, checks in asyncio.run(main()):
...     print(ok, checks)
False {'broker': 'ok', 'probed': 'not started'}
True {'broker': 'ok', 'probed.thing.happened': 'ok'}
False {'broker': 'ok', 'probed.thing.happened': 'not consuming'}
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..bus import Bus
from ..capabilities import ConnectionStatus

__all__ = ["Health", "Probe"]


@dataclass(frozen=True, slots=True)
class Probe:
    """The answer of one probe: ``ok`` and each check's result (``"ok"`` or the problem)."""

    ok: bool
    checks: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def status(self) -> int:
        """The HTTP status for it: 200 when ok, else 503."""
        return 200 if self.ok else 503

    def body(self) -> bytes:
        """The JSON body an HTTP probe answers with."""
        document = {"status": "ok" if self.ok else "unavailable", "checks": dict(self.checks)}
        return json.dumps(document, sort_keys=True).encode()


class Health:
    """Probes of one bus and the workers it started.

    ``services``: names of services that must be running for the process to be ready
    (those of ``herald run``); without it, only the workers the bus started count.
    Both probes only read state, so any thread may call them (the probe server does).
    """

    def __init__(self, bus: Bus, *, services: Collection[str] = ()) -> None:
        self.bus = bus
        self.services = tuple(services)

    def live(self) -> Probe:
        """The process is up (it answered)."""
        return Probe(True, MappingProxyType({"process": "ok"}))

    def ready(self) -> Probe:
        """Broker connected and every consumer running."""
        checks: dict[str, str] = {}
        broker = self.bus.broker
        if isinstance(broker, ConnectionStatus) and not broker.connected:
            checks["broker"] = "not connected"
        else:
            checks["broker"] = "ok"
        workers = self.bus.workers
        running = {worker.service.name for worker in workers}
        for name in self.services:
            if name not in running:
                checks[name] = "not started"
        for worker in workers:
            draining = worker.draining
            for queue, consuming in worker.consumers().items():
                checks[queue] = "draining" if draining else "ok" if consuming else "not consuming"
        ok = all(result == "ok" for result in checks.values())
        return Probe(ok, MappingProxyType(checks))
