"""The chaos soak's brokers: a private RabbitMQ node and a private NATS server on ports
of their own (never the shared ones), and the embedded SQLite broker.

``restart()`` SIGKILLs the server and starts a new one on the same port and data
directory. SQLite has no server: its restart is the platform's (every process that
has the broker's database open SIGKILLed at once, then started again), so
:attr:`PrivateBroker.embedded` tells the soak to do that instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..cluster.nats_cluster import NATS_SERVER, NATSCluster
from ..cluster.rabbit_cluster import RABBITMQ_SERVER, RabbitCluster, wait_until
from ..servers import unavailable

__all__ = ["PrivateBroker", "private_broker"]

START_TIMEOUT = 300.0  # a loaded shared machine starts RabbitMQ slowly


@dataclass
class PrivateBroker:
    scheme: str
    url: str
    rabbit: RabbitCluster | None = None
    nats: NATSCluster | None = None

    @property
    def embedded(self) -> bool:
        return self.rabbit is None and self.nats is None

    def start(self) -> None:
        if self.rabbit is not None:
            self.rabbit.nodes[0].start()
            self.rabbit.nodes[0].wait_started(START_TIMEOUT)
        if self.nats is not None:
            self.nats.nodes[0].start()
            wait_until(self._nats_healthy, START_TIMEOUT, "the private NATS server")

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.rabbit is not None:
            self.rabbit.stop()
        if self.nats is not None:
            self.nats.stop()

    def _nats_healthy(self) -> bool:
        assert self.nats is not None
        try:
            self.nats.nodes[0].monitoring("/healthz")
        except OSError:
            return False
        return True


def private_broker(scheme: str, root: Path) -> PrivateBroker:
    """A broker of ``scheme`` under ``root`` (not started)."""
    root.mkdir(parents=True, exist_ok=True)
    if scheme == "sqlite":
        return PrivateBroker(scheme, f"sqlite:///{root}/broker.db")
    if scheme == "amqp":
        if not os.access(RABBITMQ_SERVER, os.X_OK):
            unavailable(f"{RABBITMQ_SERVER} not installed (apt-get install rabbitmq-server)")
        rabbit = RabbitCluster.make(root, size=1)
        port = rabbit.nodes[0].port
        url = f"amqp://guest:guest@127.0.0.1:{port}/?namespace=soak&heartbeat=5"
        return PrivateBroker(scheme, url, rabbit=rabbit)
    if scheme == "nats":
        if not os.access(NATS_SERVER, os.X_OK):
            unavailable(f"{NATS_SERVER} not installed (apt-get install nats-server)")
        nats = NATSCluster.make(root, size=1)
        url = f"nats://127.0.0.1:{nats.nodes[0].client}/?namespace=soak&ack_wait=10"
        return PrivateBroker(scheme, url, nats=nats)
    raise ValueError(f"no private broker for {scheme}")
