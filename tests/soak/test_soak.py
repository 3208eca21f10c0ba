"""Long runs (``make soak``): sustained load while consumer processes are SIGKILLed
again and again. Nothing may be lost; duplicates only among what was in flight.

Each run publishes ``SOAK_EVENTS`` events (default 20,000) through the broker while
a chaos loop kills one of two consumer processes every few seconds and starts a new
one. The figures (time, duplicates) are printed for the notes.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from herald.testing import Environment, eventually
from herald.testing.recorder import Recorder
from herald.testing.scenarios.common import CHILD_PREFETCH, publish_ticks, tick_service

from ..servers import SPECS, BrokerSpec

pytestmark = pytest.mark.soak

EVENTS = int(os.environ.get("SOAK_EVENTS", "20000"))
KILLS = int(os.environ.get("SOAK_KILLS", "20"))


def spawn(url: str, service: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "herald.testing.child", url, service, os.fspath(out)],
        stdin=subprocess.DEVNULL,
    )


def handled(outs: list[Path]) -> Counter[int]:
    counts: Counter[int] = Counter()
    for out in outs:
        if out.exists():
            counts.update(int(line) for line in out.read_text().split())
    return counts


@pytest.mark.parametrize(
    "spec",
    [s for s in SPECS if s.scheme in ("sqlite", "amqp", "nats", "redis")],
    ids=lambda s: s.scheme,
)
async def test_consumers_killed_again_and_again_lose_nothing(
    spec: BrokerSpec, tmp_path: Path
) -> None:
    spec.require()
    token = uuid.uuid4().hex[:10]
    env = Environment(spec.make_url(token, tmp_path), tmp_path, token=token)
    name = env.service_name("soak")
    async with env.connect() as bus:
        await bus.broker.declare(tick_service(env, "soak", Recorder()).handlers[0].subscription)
    outs = [tmp_path / f"out-{i}" for i in range(KILLS + 2)]
    children = [spawn(env.url, name, outs[0]), spawn(env.url, name, outs[1])]
    started = time.monotonic()
    publisher = asyncio.create_task(publish_ticks(env, range(EVENTS), batch=500))
    rng = random.Random(7)
    try:
        for kill in range(KILLS):
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            victim = children.pop(rng.randrange(len(children)))
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            children.append(spawn(env.url, name, outs[kill + 2]))
        await publisher
        await eventually(
            lambda: len(handled(outs)) >= EVENTS, timeout=600, what="every event", interval=0.5
        )
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()
        await env.destroy()
    counts = handled(outs)
    duplicates = sum(c - 1 for c in counts.values())
    print(
        f"{spec.scheme}: {EVENTS} events, {KILLS} kills, {time.monotonic() - started:.1f}s, "
        f"{duplicates} duplicate handlings"
    )
    assert set(counts) == set(range(EVENTS)), "nothing lost"
    assert duplicates <= KILLS * CHILD_PREFETCH, "duplicates only among what was in flight"
