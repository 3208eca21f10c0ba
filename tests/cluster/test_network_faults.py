"""A publisher and a consumer in a network namespace of their own lose the route to
the broker for 30 s (the veth link goes down: no close reaches either side). Their
heartbeats notice, publishes fail clearly and are sent again, the consumer resumes on
its own when the link is back, and nothing confirmed is lost.

The broker is the shared server; only the clients' namespace is cut. A relay in the
root namespace listens on the veth address and forwards to the server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..relay import Relay
from ..servers import IN_CI, require_port
from .nats_cluster import wait_for
from .netns import Namespace, netns_missing
from .processes import kill_group, spawn
from .records import Records, first_after

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
OUTAGE = 30.0


@dataclass(frozen=True)
class Target:
    scheme: str
    port: int
    options: str

    def url(self, host: str, port: int, namespace: str) -> str:
        auth = "guest:guest@" if self.scheme == "amqp" else ""
        return f"{self.scheme}://{auth}{host}:{port}/?namespace={namespace}&{self.options}"


TARGETS = [
    pytest.param(Target("amqp", 5672, "heartbeat=5"), id="amqp", marks=pytest.mark.amqp),
    pytest.param(Target("nats", 4222, "heartbeat=2&ack_wait=5"), id="nats", marks=pytest.mark.nats),
]


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    missing = netns_missing()
    if missing is not None:
        if IN_CI:
            pytest.fail(f"{missing} (CI=true: network-fault tests must run)")
        pytest.skip(missing)
    made = Namespace()
    try:
        made.create()
        yield made
    finally:
        made.remove()


@pytest.mark.parametrize("target", TARGETS)
async def test_clients_cut_off_for_30s_lose_nothing(
    target: Target, namespace: Namespace, tmp_path: Path
) -> None:
    require_port(target.port, target.scheme)
    relay = Relay(target.port, listen=namespace.host)
    await relay.start()
    url = target.url(namespace.host, relay.port, f"nf{uuid.uuid4().hex[:8]}")
    consumer_out, publisher_out = tmp_path / "consumer.out", tmp_path / "publisher.out"
    children: list[subprocess.Popen[bytes]] = []

    def client(*args: str) -> subprocess.Popen[bytes]:
        command = namespace.command(sys.executable, "-m", "tests.cluster.client", *args)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = spawn(command, tmp_path / f"{args[0]}.log", env=env)
        children.append(child)
        return child

    try:
        consumer = client("consume", url, str(consumer_out), f"nf-{uuid.uuid4().hex[:6]}")
        await wait_for(lambda: bool(Records.read(consumer_out).ready), 60, "the consumer")
        publisher = client("publish", url, str(publisher_out))
        await wait_for(lambda: len(Records.read(consumer_out).handled) >= 100, 60, "load")
        cut_at = time.monotonic()
        namespace.cut()
        await asyncio.sleep(OUTAGE)
        namespace.restore()
        restored_at = time.monotonic()
        await wait_for(
            lambda: first_after(Records.read(publisher_out).published, restored_at + 5) is not None,
            120,
            "publishes after the link is back",
        )
        kill_group(publisher, signal.SIGTERM)
        publisher.wait(60)
        published = Records.read(publisher_out)
        total = len(published.published)
        await wait_for(
            lambda: set(Records.read(consumer_out).handled_numbers()) >= set(range(total)),
            120,
            "every confirmed event handled",
        )
        await asyncio.sleep(1)  # late redeliveries still count as duplicates
        kill_group(consumer, signal.SIGTERM)
        consumer.wait(30)
    finally:
        for child in children:
            kill_group(child)
        await relay.cut()
    received = Records.read(consumer_out)
    counts = received.handled_numbers()
    assert [n for n, _ in published.published] == list(range(total))
    assert set(counts) == set(range(total)), "lost or unknown events"
    at_cut = max((n for n, t in published.published if t <= cut_at), default=-1) + 1
    noticed = {
        who: records.warnings_between(cut_at, restored_at)
        for who, records in (("consumer", received), ("publisher", published))
    }
    assert noticed["consumer"], "the consumer never noticed the cut"
    assert noticed["publisher"] or published.errors, "the publisher never noticed the cut"
    detected = {who: rows[0][0] - cut_at for who, rows in noticed.items() if rows}
    resumed = first_after(received.handled, restored_at, at_least=at_cut)
    republished = first_after(published.published, restored_at)
    assert resumed is not None and republished is not None
    print(
        f"\n{target.scheme} clients cut off {OUTAGE:.0f} s ({target.options}): {total} "
        f"confirmed, 0 lost, {sum(c - 1 for c in counts.values())} duplicate deliveries, "
        f"{len(published.errors)} publish errors; noticed after "
        + ", ".join(f"{who} {secs:.1f} s" for who, secs in detected.items())
        + f"; after the link came back: publishing {republished - restored_at:.1f} s, "
        f"consuming {resumed - restored_at:.1f} s"
    )
    for who, rows in noticed.items():
        print(f"  {who}: {rows[:3]}")
