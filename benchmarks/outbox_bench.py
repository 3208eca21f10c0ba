"""Outbox relay throughput: SQLite and PostgreSQL outboxes drained to RabbitMQ.

For each target broker the run first measures the ceiling, ``bus.publish_many`` of
the same pre-built messages in batches of the relay's size, then stages the events
into an outbox table (transactions of ``--batch`` events, not timed in the ratio)
and times ``OutboxRelay.drain()`` publishing and deleting them all. A subscribed
queue is declared so every message is routed and stored. memory:// is a reference.

    python -m benchmarks.outbox_bench [--quick] [--events N] [--batch N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import herald
from herald.broker import Subscription
from herald.outbox import Outbox, OutboxRelay

from .rpc_bench import table

__all__ = ["Result", "main"]

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TOPIC = "bench.outbox.event"


class Staged(herald.Event, type=TOPIC):
    seq: int
    payload: str


@dataclass(slots=True)
class Result:
    """One contender: events moved in ``seconds`` (plus staging time for outboxes)."""

    target: str
    label: str
    baseline: bool
    events: int
    seconds: float = 0.0
    stage_seconds: float | None = None
    error: str = ""


def _events(count: int) -> list[tuple[herald.Event, str]]:
    return [(Staged(seq=i, payload="x" * 64), f"k{i % 16}") for i in range(count)]


async def _baseline(bus: herald.Bus, count: int, batch: int) -> float:
    messages = [bus.message(event, key=key) for event, key in _events(count)]
    started = time.perf_counter()
    for start in range(0, count, batch):
        await bus.publish_many(messages[start : start + batch])
    return time.perf_counter() - started


async def _relay(
    bus: herald.Bus, engine: AsyncEngine, count: int, batch: int
) -> tuple[float, float]:
    outbox = Outbox(f"bench_outbox_{uuid.uuid4().hex[:10]}", source="outbox-bench")
    await outbox.create(engine)
    try:
        events = _events(count)
        started = time.perf_counter()
        for start in range(0, count, batch):
            async with engine.begin() as conn:
                await outbox.stage_many(conn, events[start : start + batch])
        stage_seconds = time.perf_counter() - started
        relay = OutboxRelay(engine, bus, outbox, batch_size=batch)
        started = time.perf_counter()
        sent = await relay.drain(timeout=30)
        seconds = time.perf_counter() - started
        if sent != count or await outbox.pending(engine) != 0:
            raise RuntimeError(f"relay published {sent} of {count}")
        return seconds, stage_seconds
    finally:
        await outbox.drop(engine)


async def _target(name: str, url: str, count: int, batch: int, workdir: Path) -> list[Result]:
    results = [Result(name, "publish_many (ceiling)", True, count)]
    databases = [
        ("relay from sqlite", f"sqlite+aiosqlite:///{workdir}/{name}-outbox.db"),
        ("relay from postgresql", POSTGRES),
    ]
    results += [Result(name, label, False, count) for label, _ in databases]
    try:
        async with herald.connect(url) as bus:
            try:
                await bus.broker.declare(Subscription("outbox-bench", "sink", (TOPIC,)))
                results[0].seconds = await _baseline(bus, count, batch)
                for result, (_, db_url) in zip(results[1:], databases, strict=True):
                    engine = create_async_engine(db_url)
                    try:
                        result.seconds, result.stage_seconds = await _relay(
                            bus, engine, count, batch
                        )
                    except Exception as exc:
                        result.error = f"{type(exc).__name__}: {exc}"
                    finally:
                        await engine.dispose()
            finally:
                with contextlib.suppress(Exception):
                    await bus.broker.destroy()
    except Exception as exc:
        for result in results:
            result.error = result.error or f"{type(exc).__name__}: {exc}"
    return results


def render(results: Sequence[Result]) -> str:
    base = {r.target: r for r in results if r.baseline and not r.error}
    headers = ["target", "contender", "events", "seconds", "events/s", "ratio", "staging ev/s"]
    rows = []
    for r in results:
        if r.error:
            rows.append(
                [r.target, r.label, str(r.events), "-", "-", f"failed: {r.error[:70]}", "-"]
            )
            continue
        rate = r.events / r.seconds
        ref = base.get(r.target)
        ratio = "baseline" if r.baseline else "-"
        if ref is not None and not r.baseline:
            ratio = f"{rate / (ref.events / ref.seconds):.2f}x"
        staging = "-" if r.stage_seconds is None else f"{r.events / r.stage_seconds:,.0f}"
        rows.append(
            [r.target, r.label, str(r.events), f"{r.seconds:.2f}", f"{rate:,.0f}", ratio, staging]
        )
    return table(headers, rows, left=2)


async def run(count: int, batch: int, workdir: Path) -> list[Result]:
    ns = f"obxb{uuid.uuid4().hex[:8]}"
    results = await _target("amqp", f"{AMQP}?namespace={ns}", count, batch, workdir)
    results += await _target("memory (ref)", f"memory://{ns}", count, batch, workdir)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.outbox_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args(argv)
    count, batch = (200, 50) if args.quick else (args.events, args.batch)
    with tempfile.TemporaryDirectory(prefix="outbox-bench-") as tmp:
        results = asyncio.run(run(count, batch, Path(tmp)))
    print(f"Outbox relay: {count} events staged in transactions of {batch}, relay batch {batch};")
    print("ratio = events/s vs publish_many of the same pre-built messages to the same broker")
    print("(staging ev/s: inserting into the outbox, not part of the ratio)")
    print()
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
