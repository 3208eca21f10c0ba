"""RPC round trips: Herald ``bus.request`` against raw driver request/reply, same run.

Each contender makes ``--calls`` sequential round trips after ``--warmup`` unmeasured
ones; server and client share this process (one event loop). Baselines are raw
aio-pika with RabbitMQ direct reply-to and raw nats-py core ``nc.request``; Herald
on NATS runs both ways: durable requests (the default, stored by JetStream) and
``durable=False`` (core NATS, queue group, nothing stored: what ``nc.request`` does).
Herald on SQLite and in memory are shown for reference (ratio against nothing).

    python -m benchmarks.rpc_bench [--quick] [--calls N] [--brokers nats,amqp]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import nats
import pydantic
from nats.aio.msg import Msg

import herald

__all__ = ["Result", "main", "percentile", "render", "run", "table"]

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
NATS = "nats://127.0.0.1:4222"


@dataclass(slots=True)
class Result:
    """Latencies (ms) of one contender, or why it could not run."""

    label: str
    broker: str
    baseline: bool
    latencies: list[float]
    seconds: float
    error: str = ""


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """An aligned text table: the first ``left`` columns left-aligned, the rest right."""
    widths = [max(len(str(line[i])) for line in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            f"{c:<{widths[i]}}" if i < left else f"{c:>{widths[i]}}" for i, c in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


class Ping(herald.Event, type="bench.ping"):
    n: int


class Pong(pydantic.BaseModel):
    n: int


Call = Callable[[int], Awaitable[None]]


async def _measure(call: Call, calls: int, warmup: int) -> tuple[list[float], float]:
    for i in range(warmup):
        await call(i)
    latencies: list[float] = []
    started = time.perf_counter()
    for i in range(calls):
        t0 = time.perf_counter_ns()
        await call(i)
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
    return latencies, time.perf_counter() - started


async def herald_rpc(
    url: str, calls: int, warmup: int, durable: bool = True
) -> tuple[list[float], float]:
    service = herald.Service("bench-rpc")

    @service.rpc(Ping)
    async def pong(request: Ping, ctx: herald.Context) -> Pong:
        return Pong(n=request.n)

    bus = herald.connect(url)
    async with bus:
        worker = await bus.start(service)
        try:

            async def call(i: int) -> None:
                reply = await bus.request(Ping(n=i), Pong, timeout=10, durable=durable)
                assert reply.n == i

            return await _measure(call, calls, warmup)
        finally:
            await worker.stop()
            with contextlib.suppress(Exception):
                await bus.broker.destroy()


async def raw_amqp(calls: int, warmup: int) -> tuple[list[float], float]:
    connection = await aio_pika.connect(AMQP)
    try:
        server = await connection.channel()
        queue = await server.declare_queue(f"bench-raw-{uuid.uuid4().hex[:8]}", auto_delete=True)

        async def serve(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            reply = aio_pika.Message(message.body, correlation_id=message.correlation_id)
            await server.default_exchange.publish(reply, routing_key=message.reply_to or "")
            await message.ack()

        tag = await queue.consume(serve)
        client = await connection.channel()
        waiting: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            future = waiting.pop(message.correlation_id or "", None)
            if future is not None:
                future.set_result(message.body)

        reply_queue = await client.get_queue("amq.rabbitmq.reply-to", ensure=False)
        await reply_queue.consume(on_reply, no_ack=True)

        async def call(i: int) -> None:
            correlation = uuid.uuid4().hex
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            waiting[correlation] = future
            body = str(i).encode()
            request = aio_pika.Message(
                body, correlation_id=correlation, reply_to="amq.rabbitmq.reply-to"
            )
            await client.default_exchange.publish(request, routing_key=queue.name)
            assert await asyncio.wait_for(future, 10) == body

        try:
            return await _measure(call, calls, warmup)
        finally:
            await queue.cancel(tag)
            await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()


async def raw_nats(calls: int, warmup: int) -> tuple[list[float], float]:
    nc = await nats.connect(NATS)
    try:
        subject = f"bench.raw.{uuid.uuid4().hex[:8]}"

        async def serve(msg: Msg) -> None:
            await msg.respond(msg.data)

        await nc.subscribe(subject, cb=serve)
        await nc.flush()

        async def call(i: int) -> None:
            body = str(i).encode()
            reply = await nc.request(subject, body, timeout=10)
            assert reply.data == body

        return await _measure(call, calls, warmup)
    finally:
        await nc.close()


async def run(
    calls: int, warmup: int, workdir: Path, repeat: int = 3, brokers: Sequence[str] = ()
) -> list[list[Result]]:
    ns = f"rpcb{uuid.uuid4().hex[:8]}"
    plan: list[tuple[str, str, bool, Callable[[], Awaitable[tuple[list[float], float]]]]] = [
        ("raw aio-pika direct reply-to", "amqp", True, lambda: raw_amqp(calls, warmup)),
        (
            "herald amqp",
            "amqp",
            False,
            lambda: herald_rpc(f"{AMQP}?namespace={ns}a", calls, warmup),
        ),
        (
            "herald amqp durable=False",
            "amqp",
            False,
            lambda: herald_rpc(f"{AMQP}?namespace={ns}t", calls, warmup, durable=False),
        ),
        ("raw nats-py nc.request", "nats", True, lambda: raw_nats(calls, warmup)),
        (
            "herald nats",
            "nats",
            False,
            lambda: herald_rpc(f"{NATS}?namespace={ns}n", calls, warmup),
        ),
        (
            "herald nats durable=False",
            "nats",
            False,
            lambda: herald_rpc(f"{NATS}?namespace={ns}c", calls, warmup, durable=False),
        ),
        (
            "herald sqlite (ref)",
            "sqlite",
            False,
            lambda: herald_rpc(f"sqlite:///{workdir}/rpc.db", calls, warmup),
        ),
        (
            "herald memory (ref)",
            "memory",
            False,
            lambda: herald_rpc(f"memory://{ns}", calls, warmup),
        ),
    ]
    if brokers:
        plan = [entry for entry in plan if entry[1] in brokers]
    rounds: list[list[Result]] = []
    for _ in range(max(1, repeat)):
        results = []
        for label, broker, baseline, job in plan:
            try:
                latencies, seconds = await asyncio.wait_for(job(), 60 + calls * 0.5)
                results.append(Result(label, broker, baseline, latencies, seconds))
            except Exception as exc:  # a missing server must not hide the other rows
                why = f"{type(exc).__name__}: {exc}"
                results.append(Result(label, broker, baseline, [], 0.0, why))
        rounds.append(results)
    return rounds


def _p50_ratio(rounds: Sequence[Sequence[Result]], label: str) -> str:
    """The median over rounds of ``label``'s p50 over its broker's baseline p50."""
    ratios = []
    for results in rounds:
        mine = next(r for r in results if r.label == label)
        base = next((r for r in results if r.baseline and r.broker == mine.broker), None)
        if mine.error or base is None or base.error:
            continue
        ratios.append(percentile(mine.latencies, 0.5) / percentile(base.latencies, 0.5))
    return f"{statistics.median(ratios):.2f}x" if ratios else "-"


def render(rounds: Sequence[Sequence[Result]], calls: int) -> str:
    """One row per contender: all rounds' calls together; ratios per round, median."""
    merged: list[Result] = []
    for first in rounds[0]:
        mine = [r for results in rounds for r in results if r.label == first.label]
        errors = [r.error for r in mine if r.error]
        merged.append(
            Result(
                first.label,
                first.broker,
                first.baseline,
                [ms for r in mine for ms in r.latencies],
                sum(r.seconds for r in mine),
                errors[0] if errors else "",
            )
        )
    base = {r.broker: r for r in merged if r.baseline and not r.error}
    headers = ["contender", "calls", "p50 ms", "p99 ms", "calls/s", "p50 ratio", "p99 ratio"]
    rows = []
    for r in merged:
        if r.error:
            rows.append([r.label, str(calls), "-", "-", "-", "-", f"failed: {r.error[:60]}"])
            continue
        p99 = percentile(r.latencies, 0.99)
        ref = base.get(r.broker)
        if r.baseline:
            p50_ratio = p99_ratio = "baseline"
        elif ref is None:
            p50_ratio = p99_ratio = "-"
        else:
            p50_ratio = _p50_ratio(rounds, r.label)
            p99_ratio = f"{p99 / percentile(ref.latencies, 0.99):.2f}x"
        rows.append(
            [
                r.label,
                str(len(r.latencies)),
                f"{percentile(r.latencies, 0.50):.3f}",
                f"{p99:.3f}",
                f"{len(r.latencies) / r.seconds:,.0f}",
                p50_ratio,
                p99_ratio,
            ]
        )
    return table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rpc_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument(
        "--brokers", default="", help="comma-separated brokers to run (amqp,nats,sqlite,memory)"
    )
    args = parser.parse_args(argv)
    brokers = tuple(name for name in args.brokers.split(",") if name)
    calls, warmup = (20, 5) if args.quick else (args.calls, args.warmup)
    with tempfile.TemporaryDirectory(prefix="rpc-bench-") as tmp:
        repeat = 1 if args.quick else args.repeat
        rounds = asyncio.run(run(calls, warmup, Path(tmp), repeat, brokers))
    print(f"RPC round trips: {len(rounds)} interleaved rounds of {calls} sequential calls")
    print(f"after {warmup} warm-up each;")
    print("server and client in one process; ratios vs the raw driver of the same broker")
    print("(lower is better; p50 ratio: median over rounds of the p50 ratio of each round)")
    print()
    print(render(rounds, calls))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
