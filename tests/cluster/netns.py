"""A network namespace joined to the root namespace by a veth pair on a private /30,
made and removed by a test: clients run inside it (``ip netns exec``) and reach the
root namespace's address, where a relay forwards to the broker on 127.0.0.1.

:meth:`Namespace.cut` takes the root side of the pair down: packets in both
directions are dropped and neither end is told (no FIN, no RST), as when a cable is
pulled; :meth:`Namespace.restore` brings it back up.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess

__all__ = ["Namespace", "netns_missing"]


def netns_missing() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"ip netns is unavailable: {probe.stderr.strip()}"
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Namespace:
    """``ip netns`` of a unique name; ``host`` is the root side's address, ``address``
    the namespace's."""

    def __init__(self) -> None:
        tag = f"{random.randrange(16**5):05x}"
        self.name = f"herald-{tag}"
        self.outer, self.inner = f"hv{tag}a", f"hv{tag}b"
        base = random.randrange(64) * 4
        prefix = f"10.{random.randrange(200, 250)}.{random.randrange(256)}"
        self.host, self.address = f"{prefix}.{base + 1}", f"{prefix}.{base + 2}"
        self.made = False

    def create(self) -> None:
        _ip("netns", "add", self.name)
        self.made = True
        _ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        _ip("link", "set", self.inner, "netns", self.name)
        _ip("addr", "add", f"{self.host}/30", "dev", self.outer)
        _ip("link", "set", self.outer, "up")
        inside = ("netns", "exec", self.name, "ip")
        _ip(*inside, "addr", "add", f"{self.address}/30", "dev", self.inner)
        _ip(*inside, "link", "set", self.inner, "up")
        _ip(*inside, "link", "set", "lo", "up")

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        _ip("link", "set", self.outer, "down")

    def restore(self) -> None:
        _ip("link", "set", self.outer, "up")

    def remove(self) -> None:
        """Delete the pair and the namespace (whatever of them exists)."""
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True, check=False)
        if self.made:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
            self.made = False
