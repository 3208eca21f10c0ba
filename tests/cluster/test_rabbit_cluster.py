"""A three-node RabbitMQ cluster with quorum queues: the node leading a service's
queue SIGKILLed under load loses no confirmed event, leaves no consumer idle, and
rejoins the queue when restarted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from herald.bus import connect

from ..servers import unavailable
from .load import Handled, Published, merged, outcome, publish_until, recording_service
from .nats_cluster import wait_for
from .rabbit_cluster import RABBITMQ_SERVER, RabbitCluster, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.amqp, pytest.mark.timeout(600)]


@pytest.fixture
async def rabbit_cluster(tmp_path: Path) -> AsyncIterator[RabbitCluster]:
    if not os.access(RABBITMQ_SERVER, os.X_OK):
        unavailable(f"{RABBITMQ_SERVER} not installed (apt-get install rabbitmq-server)")
    cluster = RabbitCluster.make(tmp_path / "rabbit")
    try:
        await asyncio.to_thread(cluster.start)
        yield cluster
    finally:
        cluster.stop()


async def test_queue_leader_killed_under_load_loses_nothing(rabbit_cluster: RabbitCluster) -> None:
    namespace = f"cl{uuid.uuid4().hex[:8]}"
    url = (
        f"amqp://guest:guest@{rabbit_cluster.url_hosts}/"
        f"?namespace={namespace}&queue_type=quorum&heartbeat=5"
    )
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
            leaders = await asyncio.to_thread(rabbit_cluster.leaders)
            queue = next(  # service a's subscription queue, not its dead letters
                name for name in leaders if f"a-{namespace}." in name and "dlq" not in name
            )
            leader = leaders[queue]
            killed_at, at_kill = time.monotonic(), published.count
            rabbit_cluster.node(leader).kill()
            await wait_for(
                lambda: published.first_after(killed_at) is not None,
                120,
                "a publish after the kill",
            )
            await asyncio.sleep(2)
            rabbit_cluster.node(leader).start()
            restarted_at = time.monotonic()
            await asyncio.to_thread(rabbit_cluster.node(leader).wait_started)

            await asyncio.to_thread(
                wait_until, lambda: rabbit_cluster.online(queue, leader), 120, f"{leader} back"
            )
            rejoined_at, at_rejoin = time.monotonic(), published.count
            await wait_for(lambda: published.count >= at_rejoin + 400, 120, "load after rejoin")
        except AssertionError:
            _dump_tasks()
            print(f"publish errors: {len(published.errors)}, the first: {published.errors[:3]}")
            raise
        finally:
            stop.set()
            await asyncio.wait_for(publishing, 60)
        total = published.count
        await wait_for(
            lambda: (
                set(merged([workers["a1"], workers["a2"]])) >= set(range(total))
                and set(workers["b"].numbers()) >= set(range(total))
            ),
            180,
            "every confirmed event handled by both services",
        )
        await asyncio.sleep(1)  # late redeliveries still count as duplicates
    seen = outcome(
        workers, published, total, leader, killed_at=killed_at, at_kill=at_kill, at_rejoin=at_rejoin
    )
    print(
        f"\nqueues and leaders: {leaders}\n"
        f"RabbitMQ quorum queue {queue}: leader {leader} killed: {total} events confirmed, "
        f"0 lost, {seen.duplicates} duplicate deliveries; "
        f"publish errors {len(published.errors)}; "
        f"first publish confirmed {seen.published_again:.2f} s after the kill, "
        f"first event published after the kill handled {seen.consumed_again:.2f} s "
        f"after it; back in the queue {rejoined_at - restarted_at:.2f} s after its restart"
    )


def _dump_tasks() -> None:
    """Where every task waits, down its chain of awaits: what a stall needs."""
    for task in asyncio.all_tasks():
        where = []
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is None:
                where.append(repr(awaited)[:120])
                break
            where.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
        print(f"--- {task.get_name()}\n  " + "\n  ".join(where))
