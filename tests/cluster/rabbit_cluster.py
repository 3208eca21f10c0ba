"""A three-node RabbitMQ cluster on private ports, for the cluster tests.

Each node has its own node name, AMQP and distribution ports, data and log
directories, configuration (no plugins: the shared node owns 15672) and the cluster's
own Erlang cookie (a ``HOME`` of its own); the shared node on 5672 is never touched.
Nodes 2 and 3 join node 1 with ``rabbitmqctl join_cluster``.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .processes import free_ports, kill_group, spawn

__all__ = ["RABBITMQ_SERVER", "RabbitCluster", "RabbitNode", "wait_until"]

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
LOOPBACK_DISTRIBUTION = "-kernel inet_dist_use_interface {127,0,0,1}"


@dataclass
class RabbitNode:
    name: str
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = spawn([RABBITMQ_SERVER], self.log, env=self.env)

    def kill(self) -> None:
        if self.process is not None:
            kill_group(self.process)
            self.process = None

    def ctl(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [RABBITMQCTL, "-n", self.name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.name}: {done.stderr}")
        return done.stdout

    def wait_started(self, timeout: float = 180) -> None:
        """Wait until the node answers ``rabbitmqctl ping``, then until it has started."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log}")
            try:
                self.ctl("ping", timeout=60)
                break
            except (RuntimeError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        left = max(deadline - time.monotonic(), 10)
        self.ctl("await_startup", "--timeout", str(int(left)), timeout=left + 30)


@dataclass
class RabbitCluster:
    root: Path
    nodes: list[RabbitNode] = field(default_factory=list)

    @classmethod
    def make(cls, root: Path, size: int = 3) -> RabbitCluster:
        cluster = cls(root)
        home = root / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex.upper())
        cookie.chmod(0o400)
        (root / "enabled_plugins").write_text("[].\n")
        (root / "rabbitmq-env.conf").write_text("")
        tag = uuid.uuid4().hex[:6]
        ports = free_ports(2 * size)
        for i in range(size):
            port, dist = ports[2 * i : 2 * i + 2]
            name = f"herald{tag}n{i + 1}@localhost"
            base = root / f"n{i + 1}"
            base.mkdir()
            config = base / "rabbitmq.conf"
            config.write_text(f"listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(home),
                "RABBITMQ_NODENAME": name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(port),
                "RABBITMQ_DIST_PORT": str(dist),
                "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(base / "log"),
                "RABBITMQ_PID_FILE": str(base / "pid"),
                "RABBITMQ_CONFIG_FILE": str(config),
                "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
                "RABBITMQ_PLUGINS_EXPAND_DIR": str(base / "plugins"),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": LOOPBACK_DISTRIBUTION,
                "LANG": "C.UTF-8",
            }
            cluster.nodes.append(RabbitNode(name, port, env, base / "server.log"))
        return cluster

    @property
    def url_hosts(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> None:
        """Start every node and join nodes 2.. to node 1."""
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_started()
        first = self.nodes[0].name
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first)
            node.ctl("start_app")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def node(self, name: str) -> RabbitNode:
        return next(node for node in self.nodes if node.name == name)

    def leaders(self) -> dict[str, str]:  # name -> leader
        """Queue name -> the node leading it (quorum queues), asked of a live node."""
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                text = node.ctl("list_queues", "name", "leader", "--no-table-headers", "-q")
            except (RuntimeError, subprocess.TimeoutExpired):
                continue
            rows = (line.split("\t") for line in text.splitlines() if "\t" in line)
            return {name: leader for name, leader in rows}
        return {}

    def online(self, queue: str, name: str) -> bool:
        """Whether node ``name`` is back as an online member of quorum queue ``queue``."""
        try:
            text = self.node(name).ctl("list_queues", "name", "online", "--no-table-headers", "-q")
        except (RuntimeError, subprocess.TimeoutExpired):
            return False
        return any(line.split("\t", 1)[0] == queue and name in line for line in text.splitlines())


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Block until ``check()`` (run it in a thread from async code)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)
