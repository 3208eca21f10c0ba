"""A three-node NATS JetStream cluster (replicas 3): the stream leader SIGKILLed under
load loses no confirmed event, leaves no consumer idle, and rejoins when restarted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from herald.brokers.nats import NATSSettings
from herald.bus import connect

from ..servers import unavailable
from .load import Handled, Published, merged, outcome, publish_until, recording_service
from .nats_cluster import NATS_SERVER, NATSCluster, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.nats]


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[NATSCluster]:
    if not os.access(NATS_SERVER, os.X_OK):
        unavailable(f"{NATS_SERVER} not installed (apt-get install nats-server)")
    cluster = NATSCluster.make(tmp_path / "nats")
    try:
        cluster.start()
        await cluster.ready()
        yield cluster
    finally:
        cluster.stop()


async def test_stream_leader_killed_under_load_loses_nothing(nats_cluster: NATSCluster) -> None:
    namespace = f"cl{uuid.uuid4().hex[:8]}"
    url = f"nats://{nats_cluster.url_hosts}/?namespace={namespace}&replicas=3&ack_wait=5"
    stream = NATSSettings.from_url(url).names.streams.events
    workers = {"a1": Handled(), "a2": Handled(), "b": Handled()}
    published = Published()
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        buses = {key: await stack.enter_async_context(connect(url)) for key in workers}
        for key, handled in workers.items():
            service = f"{key[0]}-{namespace}"  # a1 and a2: two processes of one service
            await buses[key].start(recording_service(service, handled))
        publisher_bus = await stack.enter_async_context(connect(url))
        publishing = asyncio.create_task(publish_until(publisher_bus, stop, published))
        try:
            await wait_for(lambda: published.count >= 400, 120, "load before the kill")
            leader = nats_cluster.stream_leader(stream)
            assert leader is not None, f"no leader found for {stream}"
            killed_at, at_kill = time.monotonic(), published.count
            nats_cluster.node(leader).kill()
            await wait_for(
                lambda: published.first_after(killed_at) is not None, 60, "a publish after the kill"
            )
            await asyncio.sleep(2)
            nats_cluster.node(leader).start()
            restarted_at = time.monotonic()
            await wait_for(
                lambda: nats_cluster.caught_up(stream, leader), 60, f"{leader} to rejoin"
            )
            rejoined_at, at_rejoin = time.monotonic(), published.count
            await wait_for(lambda: published.count >= at_rejoin + 400, 120, "load after rejoin")
        finally:
            stop.set()
            await publishing
        total = published.count
        await wait_for(
            lambda: (
                set(merged([workers["a1"], workers["a2"]])) >= set(range(total))
                and set(workers["b"].numbers()) >= set(range(total))
            ),
            120,
            "every confirmed event handled by both services",
        )
        await asyncio.sleep(1)  # late redeliveries still count as duplicates
        replicas = await _replicas(url, namespace)
    assert set(replicas.values()) == {3}, f"created with other replica counts: {replicas}"
    seen = outcome(
        workers, published, total, leader, killed_at=killed_at, at_kill=at_kill, at_rejoin=at_rejoin
    )
    print(
        f"\nNATS R3 stream leader {leader} killed: {total} events confirmed, 0 lost, "
        f"{seen.duplicates} duplicate deliveries; publish errors {len(published.errors)}; "
        f"first publish confirmed {seen.published_again:.2f} s after the kill, "
        f"first event published after the kill handled {seen.consumed_again:.2f} s "
        "after it; "
        f"rejoined {rejoined_at - restarted_at:.2f} s after its restart"
    )


async def _replicas(url: str, namespace: str) -> dict[str, int]:
    """The replica count of every stream and consumer of the namespace."""
    settings = NATSSettings.from_url(url)
    client = await nats.connect(settings.servers)
    try:
        js = client.jetstream()
        found: dict[str, int] = {}
        for stream in await js.streams_info():
            name = stream.config.name or ""
            if not name.startswith(namespace) and not name.startswith(f"KV_{namespace}"):
                continue
            found[name] = stream.config.num_replicas or 0
            for consumer in await js.consumers_info(name):
                found[f"{name}/{consumer.name}"] = consumer.config.num_replicas or 0
        return found
    finally:
        await client.close()
