"""A three-node NATS JetStream cluster on private ports, for the cluster tests (or a
single private server, ``size=1``, for the chaos soak).

Each node has its own client, route and monitoring port and its own store directory
under the test's temporary directory; the shared server on 4222 is never touched.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .processes import free_ports, kill_group, spawn

__all__ = ["NATSCluster", "NATSNode"]

NATS_SERVER = "/usr/sbin/nats-server"


@dataclass
class NATSNode:
    name: str
    client: int
    route: int
    monitor: int
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = spawn([NATS_SERVER, "-c", str(self.config)], self.log)

    def kill(self) -> None:
        if self.process is not None:
            kill_group(self.process)
            self.process = None

    def monitoring(self, path: str) -> dict[str, object]:
        url = f"http://127.0.0.1:{self.monitor}{path}"
        with urllib.request.urlopen(url, timeout=2) as answer:
            found: dict[str, object] = json.load(answer)
            return found


@dataclass
class NATSCluster:
    root: Path
    nodes: list[NATSNode] = field(default_factory=list)

    @classmethod
    def make(cls, root: Path, size: int = 3) -> NATSCluster:
        ports = free_ports(3 * size)
        cluster = cls(root)
        for i in range(size):
            client, route, monitor = ports[3 * i : 3 * i + 3]
            name = f"n{i + 1}"
            cluster.nodes.append(
                NATSNode(name, client, route, monitor, root / f"{name}.conf", root / f"{name}.log")
            )
        routes = ", ".join(f"nats-route://127.0.0.1:{node.route}" for node in cluster.nodes)
        for node in cluster.nodes:
            store = root / node.name
            store.mkdir(parents=True, exist_ok=True)
            node.config.write_text(
                f"server_name: {node.name}\n"
                f"listen: 127.0.0.1:{node.client}\n"
                f"http: 127.0.0.1:{node.monitor}\n"
                f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, '
                "max_file_store: 1GB }\n"
            )
            if size > 1:  # one node alone is a plain JetStream server
                with node.config.open("a") as config:
                    config.write(
                        f"cluster {{ name: herald-test, listen: 127.0.0.1:{node.route}, "
                        f"routes: [{routes}] }}\n"
                    )
        return cluster

    @property
    def url_hosts(self) -> str:
        return ",".join(f"127.0.0.1:{node.client}" for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def node(self, name: str) -> NATSNode:
        return next(node for node in self.nodes if node.name == name)

    async def ready(self, timeout: float = 60.0) -> None:
        """Every node up, and JetStream with a meta leader all nodes agree on."""
        await wait_for(self._ready, timeout, "the NATS cluster to elect a JetStream leader")

    def _ready(self) -> bool:
        leaders = set()
        for node in self.nodes:
            try:
                jsz = node.monitoring("/jsz")
            except OSError:
                return False
            meta = jsz.get("meta_cluster")
            if not isinstance(meta, dict) or not meta.get("leader"):
                return False
            leaders.add(meta["leader"])
        return len(leaders) == 1

    def stream_leader(self, stream: str) -> str | None:
        """The name of the node leading ``stream`` (from any live node's /jsz)."""
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                jsz = node.monitoring("/jsz?streams=true")
            except OSError:
                continue
            for account in jsz.get("account_details") or []:  # type: ignore[attr-defined]
                for detail in account.get("stream_detail") or []:
                    if detail.get("name") == stream:
                        leader = (detail.get("cluster") or {}).get("leader")
                        if leader:
                            return str(leader)
        return None

    def caught_up(self, stream: str, name: str) -> bool:
        """Whether node ``name`` is healthy (its ``/healthz``: JetStream current) and
        holds ``stream`` up to the last sequence another live node has."""
        try:
            self.node(name).monitoring("/healthz")
            own = _last_seq(self.node(name).monitoring("/jsz?streams=true"), stream)
        except OSError:
            return False
        others = []
        for node in self.nodes:
            if node.name == name or node.process is None:
                continue
            try:
                others.append(_last_seq(node.monitoring("/jsz?streams=true"), stream))
            except OSError:
                continue
        return own is not None and bool(others) and own >= max(seq or 0 for seq in others)


def _last_seq(jsz: dict[str, object], stream: str) -> int | None:
    for account in jsz.get("account_details") or []:  # type: ignore[attr-defined]
        for detail in account.get("stream_detail") or []:
            if detail.get("name") == stream:
                return int((detail.get("state") or {}).get("last_seq", 0))
    return None


async def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)
