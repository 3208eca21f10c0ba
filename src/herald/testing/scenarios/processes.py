"""Crashes and outages: a consumer SIGKILLed mid-stream, a broker restarted under load."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from ...broker import Subscription
from ...service import Service
from ..environment import Environment
from ..events import Keyed, Tick
from ..recorder import Recorder, eventually
from .common import CHILD_PREFETCH, publish_through_outage, publish_ticks, tick_service

__all__ = [
    "broker_restart_under_load_loses_nothing",
    "consumer_killed_mid_stream_loses_nothing",
    "ordering_per_key_across_processes",
]


async def consumer_killed_mid_stream_loses_nothing(env: Environment) -> None:
    total, pause_after = 300, 40
    name = env.service_name("killed")
    out = env.workdir / f"{name}.out"
    async with env.connect() as bus:
        await bus.broker.declare(tick_service(env, "killed", Recorder()).handlers[0].subscription)
    await publish_ticks(env, range(total))
    child = _spawn_child(env.url, name, out, pause_after=pause_after)
    try:
        await eventually(
            lambda: out.with_suffix(".paused").exists(), timeout=60, what="child paused"
        )
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        before = _handled(out)
        assert len(before) == pause_after, f"the child recorded {len(before)} before the kill"
        child = _spawn_child(env.url, name, out)
        await eventually(lambda: set(_handled(out)) >= set(range(total)), timeout=120, what="all")
        await asyncio.sleep(0.5)
    finally:
        _stop(child)
    counts = Counter(_handled(out))
    assert set(counts) == set(range(total)), "every event handled"
    twice = {n for n, c in counts.items() if c > 1}
    assert max(counts.values()) <= 2, (
        f"handled three times: {[n for n, c in counts.items() if c > 2]}"
    )
    assert twice <= set(before), "only events the killed child had handled come twice"
    assert len(twice) <= CHILD_PREFETCH, f"{len(twice)} duplicates: more than the child's prefetch"


async def broker_restart_under_load_loses_nothing(env: Environment) -> None:
    assert env.restart_broker is not None
    total = 10_000
    first: set[int] = set()
    second: set[int] = set()
    confirmed = [0]
    async with env.connect() as bus:
        workers = [
            await bus.start(_set_service(env, "restart-a", first)),
            await bus.start(_set_service(env, "restart-b", second)),
        ]
        publisher = asyncio.create_task(publish_through_outage(env, total, confirmed))
        await eventually(lambda: len(first) > total // 5, timeout=120, what="load before restart")
        at_restart = confirmed[0]
        await env.restart_broker()
        assert at_restart < total, f"the restart landed mid-stream ({at_restart} published)"
        await publisher
        await eventually(
            lambda: len(first) == len(second) == total,
            timeout=240,
            what="every event handled by both services",
            interval=0.2,
        )
        for worker in workers:
            await worker.stop()
    assert first == second == set(range(total))


def _set_service(env: Environment, base: str, seen: set[int]) -> Service:
    service = Service(env.service_name(base), concurrency=32)

    @service.on(Tick)
    async def record(event: Tick) -> None:
        seen.add(event.n)

    return service


async def ordering_per_key_across_processes(env: Environment) -> None:
    """Two processes of one service with exclusive queues: one consumes, the other
    stands by; when the first is killed the second takes over, and every key is
    handled in publish order by each of them."""
    keys, per_key, pause_after = 10, 30, 60
    name = env.service_name("exclusive")
    out = env.workdir / f"{name}.out"
    subscription = Subscription(name, "conformance.keyed", exclusive=True)
    async with env.connect() as bus:
        await bus.broker.declare(subscription)
        await bus.publish_many(
            (Keyed(key=f"k{k}", seq=s), f"k{k}") for s in range(per_key) for k in range(keys)
        )
    first = _spawn_child(env.url, name, out, pause_after=pause_after, keyed=True)
    second = None
    try:
        await eventually(lambda: bool(_lines(out)), timeout=60, what="the first handling")
        second = _spawn_child(env.url, name, out, keyed=True)
        await eventually(
            lambda: out.with_suffix(".paused").exists(), timeout=60, what="first paused"
        )
        async with env.connect() as bus:

            async def both_attached() -> bool:
                stats = await bus.inspect_queues([subscription.queue])
                return bool(stats) and stats[0].consumers == 2

            await eventually(both_attached, timeout=60, what="the second process standing by")
        assert len(_lines(out)) == pause_after, "the standby took nothing while the first held"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        total = keys * per_key
        await eventually(
            lambda: len({(k, q) for _, k, q in _lines(out)}) >= total, timeout=120, what="all"
        )
    finally:
        _stop(first)
        if second is not None:
            _stop(second)
    lines = _lines(out)
    pids = list(dict.fromkeys(pid for pid, _, _ in lines))
    assert len(pids) == 2 and all(p == pids[0] for p, _, _ in lines[:pause_after])
    assert {(k, q) for _, k, q in lines} == {
        (f"k{k}", s) for k in range(keys) for s in range(per_key)
    }
    for pid in pids:
        for k in range(keys):
            seqs = [q for p, key, q in lines if p == pid and key == f"k{k}"]
            assert seqs == sorted(set(seqs)), f"process {pid}, key k{k}: {seqs}"


def _lines(path: Path) -> list[tuple[str, str, int]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    rows = [line.split() for line in text.splitlines() if line.strip()]
    return [(pid, key, int(seq)) for pid, key, seq in rows]


def _spawn_child(
    url: str, service: str, out: Path, pause_after: int = 0, keyed: bool = False
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "herald.testing.child", url, service, os.fspath(out)]
    if pause_after:
        command += ["--pause-after", str(pause_after)]
    if keyed:
        command += ["--keyed", "--exclusive"]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(15)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(5)


def _handled(path: Path) -> list[int]:
    try:
        return [int(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []
