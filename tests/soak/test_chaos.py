"""The chaos soak (``make soak``): the HR platform's shape under SIGKILLs and broker
restarts, on SQLite, RabbitMQ and NATS.

A publishing service writes ``SOAK_EVENTS`` business rows (default 5,000), staging
one event per row through the transactional outbox; two consuming services with two
replicas each handle every event once through the inbox (see :mod:`.services`).
Meanwhile a chaos loop

- SIGKILLs a consumer replica ``SOAK_KILLS`` times (default 20) and starts a new one;
  the victim is always the second replica of a service (alternating services), so
  the first replica of each lives through the whole run and its RSS and open file
  descriptors show any growth;
- SIGKILLs the publisher 5 times in the middle of a transaction (it is held open
  after staging, then killed) and starts the next generation;
- restarts the broker 3 times: RabbitMQ and NATS are private servers on ports of
  their own, SIGKILLed and started again; the embedded SQLite broker has no server,
  so its restart is every process that has its database open SIGKILLed at once,
  then all started again.

The consumers declare their queues before the publisher starts. A process that exits
because the broker was down when it started (Herald's first connect fails fast) is
started again, as the platform's supervisor would, and counted (``revived``); any
other exit fails the run. Publisher kills and broker restarts come at set shares of
the rows committed, consumer kills at set shares of the events consumed. Then every
committed row's event must have had its effect exactly once in each service, no
rolled-back or killed transaction's event any effect, and the witnesses' RSS and
descriptors must stay within :data:`RSS_GROWTH` and :data:`FD_GROWTH`. The figures
are printed, and appended as a JSON line to ``$SOAK_REPORT`` when set.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from .brokers import PrivateBroker, private_broker
from .platform import SERVICES, Platform, Replica

EVENTS = int(os.environ.get("SOAK_EVENTS", "5000"))
KILLS = int(os.environ.get("SOAK_KILLS", "20"))
PUBLISHER_KILLS = 5
RESTARTS = 3
HOLDS = (0.12, 0.3, 0.48, 0.66, 0.84)
"""Shares of the rows committed at which the publisher is killed in a transaction."""
RATE = float(os.environ.get("SOAK_RATE", "400"))
"""Rows the publisher commits per second at most, near what the consumers keep up with."""
DRAIN_TIMEOUT = float(os.environ.get("SOAK_DRAIN_TIMEOUT", "1800"))
RSS_GROWTH = 64 * 1024 * 1024
"""Bound on a witness replica's RSS growth from warm to the end of the run."""
FD_GROWTH = 16
"""Bound on the growth of a witness replica's open file descriptors."""

pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(os.environ.get("SOAK_TIMEOUT", "10800")))]


@dataclass(frozen=True)
class Action:
    at: float  # share of rows committed (publisher, broker) or events consumed (consumer)
    kind: str


def plan() -> list[Action]:
    actions = [Action(0.03 + 0.94 * i / max(KILLS - 1, 1), "consumer") for i in range(KILLS)]
    actions += [Action(share, "publisher") for share in HOLDS]
    actions += [Action(share, "broker") for share in (0.22, 0.55, 0.78)][:RESTARTS]
    return actions


@dataclass(frozen=True)
class Report:
    broker: str
    events: int
    consumer_kills: int
    publisher_kills: int
    broker_restarts: int
    revived: int
    rolled_back: int
    killed_open: int
    lost: int
    phantom: int
    duplicate_deliveries: int
    duplicate_effects: int
    drain_seconds: float
    events_per_second: float
    rss_start_mib: float
    rss_end_mib: float
    rss_growth_mib: float
    fds_start: int
    fds_end: int
    fds_growth: int
    witness_seconds: float
    loadavg: str


class Chaos:
    def __init__(self, platform: Platform, broker: PrivateBroker) -> None:
        self.platform = platform
        self.broker = broker
        self.done = {"consumer": 0, "publisher": 0, "broker": 0}

    async def act(self, action: Action) -> None:
        platform = self.platform
        if action.kind == "consumer":
            service = SERVICES[self.done["consumer"] % len(SERVICES)]
            victim = next(r for r in platform.replicas if r.service == service and r.slot == 1)
            platform.kill_replica(victim)
            platform.start_replica(service, 1)
        elif action.kind == "publisher":
            platform.kill_held_publisher()
            platform.start_publisher()
        elif self.broker.embedded:
            platform.kill_everything()
            platform.start()
        else:
            await asyncio.to_thread(self.broker.restart)
        self.done[action.kind] += 1

    def shares(self) -> dict[str, float]:
        """How far each kind of action's clock has gone: rows committed, events consumed."""
        platform = self.platform
        committed = platform.committed_count() / EVENTS
        consumed = min(platform.consumed_count(s) for s in SERVICES) / EVENTS
        return {"consumer": consumed, "publisher": committed, "broker": committed}

    async def run(self) -> None:
        actions = plan()
        deadline = time.monotonic() + DRAIN_TIMEOUT + 10 * EVENTS / RATE
        while True:
            await asyncio.sleep(0.5)
            self.platform.look()
            crashed = self.platform.revive()
            assert not crashed, f"a process died unasked: {crashed}"
            shares = self.shares()
            shares["publisher"] = 1.0 if self.platform.held() else 0.0
            due = [a for a in actions if shares[a.kind] >= a.at]
            if due:
                actions.remove(due[0])
                await self.act(due[0])
                continue
            if not actions and self.drained():
                return
            assert time.monotonic() < deadline, (
                f"not drained in time: {len(actions)} actions left, "
                f"{self.platform.committed_count()} committed, "
                f"{[self.platform.consumed_count(s) for s in SERVICES]} consumed"
            )

    def drained(self) -> bool:
        platform = self.platform
        if not platform.transactions().done:
            return False
        committed = platform.committed_count()
        return all(platform.consumed_count(s) >= committed for s in SERVICES)


def append_line(path: Path, line: str) -> None:
    with path.open("a") as out:
        out.write(line + "\n")


def witness(replicas: list[Replica]) -> Replica:
    """The replica measured longest (warm to its last look)."""
    measured = [r for r in replicas if r.first is not None and r.last is not None]
    assert measured, "no replica was measured"
    return max(measured, key=lambda r: r.last.at - r.first.at)  # type: ignore[union-attr]


@pytest.mark.parametrize("scheme", ["sqlite", "amqp", "nats"])
async def test_platform_under_chaos_loses_nothing_and_does_nothing_twice(
    scheme: str, tmp_path: Path
) -> None:
    broker = private_broker(scheme, tmp_path / "broker")
    await asyncio.to_thread(broker.start)
    platform = Platform(tmp_path, broker.url, EVENTS, RATE, [int(s * EVENTS) for s in HOLDS])
    chaos = Chaos(platform, broker)
    try:
        platform.start_consumers()  # events published before a queue exists miss it
        deadline = time.monotonic() + 300
        while not platform.ready():
            assert time.monotonic() < deadline, "the consumers did not declare their queues"
            await asyncio.sleep(0.2)
        platform.start_publisher()
        await chaos.run()
    finally:
        platform.stop()
        broker.stop()
    report = measure(scheme, platform, chaos)
    print(json.dumps(asdict(report)))
    if target := os.environ.get("SOAK_REPORT"):
        await asyncio.to_thread(append_line, Path(target), json.dumps(asdict(report)))
    assert report.lost == 0, f"{report.lost} committed events never had their effect"
    assert report.phantom == 0, f"{report.phantom} effects of events never committed"
    assert report.duplicate_effects == 0, f"{report.duplicate_effects} effects done twice"
    assert report.rss_growth_mib <= RSS_GROWTH / 2**20, "a replica's RSS grew past the bound"
    assert report.fds_growth <= FD_GROWTH, "a replica leaks file descriptors"


def measure(scheme: str, platform: Platform, chaos: Chaos) -> Report:
    """The run's figures, once what must hold whatever the figures has been checked."""
    transactions = platform.transactions()
    published = platform.published()
    assert len(published) == EVENTS
    assert published == transactions.committed, "commit lines and rows disagree"
    assert chaos.done == {"consumer": KILLS, "publisher": PUBLISHER_KILLS, "broker": RESTARTS}
    killed_open = {n for rows in transactions.held for n in rows}
    assert len(transactions.held) >= PUBLISHER_KILLS  # one more if a restart hit a hold
    assert not killed_open & published, "a transaction killed while open committed"
    assert transactions.rolled_back, "the publisher rolled nothing back"
    assert transactions.rolled_back | killed_open <= transactions.begun - published
    lost = phantom = duplicate_effects = duplicate_deliveries = 0
    for service in SERVICES:
        effects = platform.effects(service)
        lost += len(published - set(effects))
        phantom += len(set(effects) - published)
        duplicate_effects += sum(c - 1 for c in effects.values())
        duplicate_deliveries += sum(c - 1 for c in platform.deliveries(service).values())
    first_commit, last_commit = min(transactions.commit_times), max(transactions.commit_times)
    drained = max(platform.drained_at(s) for s in SERVICES)
    replicas = platform.all_replicas()
    witnesses = [witness([r for r in replicas if r.service == s]) for s in SERVICES]
    starts = [r.first for r in witnesses if r.first is not None]
    ends = [r.last for r in witnesses if r.last is not None]
    return Report(
        broker=scheme,
        events=EVENTS,
        consumer_kills=chaos.done["consumer"],
        publisher_kills=chaos.done["publisher"],
        broker_restarts=chaos.done["broker"],
        revived=len(platform.revived),
        rolled_back=len(transactions.rolled_back),
        killed_open=len(killed_open),
        lost=lost,
        phantom=phantom,
        duplicate_deliveries=duplicate_deliveries,
        duplicate_effects=duplicate_effects,
        drain_seconds=round(drained - last_commit, 1),
        events_per_second=round(EVENTS / (drained - first_commit), 1),
        rss_start_mib=round(max(s.rss for s in starts) / 2**20, 1),
        rss_end_mib=round(max(s.rss for s in ends) / 2**20, 1),
        rss_growth_mib=round(
            max(e.rss - s.rss for s, e in zip(starts, ends, strict=True)) / 2**20, 1
        ),
        fds_start=max(s.fds for s in starts),
        fds_end=max(s.fds for s in ends),
        fds_growth=max(e.fds - s.fds for s, e in zip(starts, ends, strict=True)),
        witness_seconds=round(min(e.at - s.at for s, e in zip(starts, ends, strict=True)), 1),
        loadavg=Path("/proc/loadavg").read_text().strip(),
    )
