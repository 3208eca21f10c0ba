"""The scenario suite every broker adapter must pass.

Each scenario is an ``async def (env: Environment) -> None`` that raises
AssertionError on failure. ``requires`` names the :class:`herald.Features` it needs;
brokers lacking one are not run through that scenario (it does not apply to them).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pydantic

from ..broker import Features
from ..bus import Bus
from ..context import Context
from ..deadletter import DeadLetter
from ..errors import BrokerError, Reject
from ..errors import TimeoutError as HeraldTimeoutError
from ..event import Event
from ..message import Message
from ..retry import RetryPolicy
from ..rpc import ExpectedError, RemoteError
from ..service import Service
from .environment import Environment
from .events import Blob, Keyed, Tick
from .recorder import Recorder, eventually

__all__ = ["SCENARIOS", "Scenario"]

FAST_RETRY = RetryPolicy(attempts=3, initial_delay=0.05, multiplier=2.0, max_delay=0.2, jitter=0)
MiB = 1024 * 1024


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Environment], Awaitable[None]]
    requires: tuple[str, ...] = ()

    def applies(self, features: Features) -> bool:
        return all(getattr(features, name) for name in self.requires if name != "restartable")


SCENARIOS: list[Scenario] = []


def scenario(
    *requires: str,
) -> Callable[[Callable[[Environment], Awaitable[None]]], Callable[[Environment], Awaitable[None]]]:
    def register(
        func: Callable[[Environment], Awaitable[None]],
    ) -> Callable[[Environment], Awaitable[None]]:
        SCENARIOS.append(Scenario(func.__name__, func, requires))
        return func

    return register


def tick_service(env: Environment, base: str, seen: Recorder[int], **kw: object) -> Service:
    service = Service(env.service_name(base), **kw)  # type: ignore[arg-type]

    @service.on(Tick)
    async def record(event: Tick, ctx: Context) -> None:
        seen.add(event.n)

    return service


async def publish_ticks(env: Environment, numbers: range, batch: int = 200) -> None:
    async with env.connect() as bus:
        for start in range(numbers.start, numbers.stop, batch):
            chunk = range(start, min(start + batch, numbers.stop))
            await bus.publish_many(Tick(n=n) for n in chunk)


@scenario()
async def publish_subscribe(env: Environment) -> None:
    seen: Recorder[int] = Recorder()
    async with env.connect() as bus:
        worker = await bus.start(tick_service(env, "pubsub", seen))
        message = await bus.publish(Tick(n=1), key="k1")
        assert message.type == "conformance.tick" and message.subject == "k1"
        assert await seen.wait_for(1) == [1]
        await worker.stop()


@scenario()
async def publish_without_subscriber_is_not_an_error(env: Environment) -> None:
    async with env.connect() as bus:
        message = await bus.publish(Tick(n=1))
        assert message.id


@scenario()
async def fan_out_to_three_services(env: Environment) -> None:
    recorders = [Recorder[int]() for _ in range(3)]
    async with env.connect() as bus:
        workers = [
            await bus.start(tick_service(env, f"fan{i}", rec)) for i, rec in enumerate(recorders)
        ]
        await bus.publish_many(Tick(n=n) for n in range(100))
        for rec in recorders:
            await rec.wait_for(100)
        await asyncio.sleep(0.2)
        for rec in recorders:
            assert sorted(rec.items) == list(range(100)), "each service gets each event once"
        for worker in workers:
            await worker.stop()


@scenario()
async def late_subscriber_gets_events_after_its_queue_exists(env: Environment) -> None:
    early: Recorder[int] = Recorder()
    late: Recorder[int] = Recorder()
    async with env.connect() as bus:
        first = await bus.start(tick_service(env, "early", early))
        await bus.publish(Tick(n=1))
        await early.wait_for(1)
        second = await bus.start(tick_service(env, "late", late))
        await bus.publish(Tick(n=2))
        await early.wait_for(2)
        await late.wait_for(1)
        await asyncio.sleep(0.3)
        assert late.items == [2], f"late subscriber saw {late.items}, expected only [2]"
        assert sorted(early.items) == [1, 2], "the running service was not disturbed"
        await first.stop()
        await second.stop()


@scenario()
async def offline_subscriber_catches_up(env: Environment) -> None:
    seen: Recorder[int] = Recorder()
    service = tick_service(env, "offline", seen)
    async with env.connect() as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=0))
        await seen.wait_for(1)
        await worker.stop()
    await publish_ticks(env, range(1, 51))
    async with env.connect() as bus:
        worker = await bus.start(service)
        await seen.wait_for(51)
        await worker.stop()
    assert sorted(seen.items) == list(range(51))


@scenario()
async def retry_then_success(env: Environment) -> None:
    attempts: Recorder[tuple[int, bool]] = Recorder()
    service = Service(env.service_name("flaky"), retry=FAST_RETRY)

    @service.on(Tick)
    async def flaky(event: Tick, ctx: Context) -> None:
        attempts.add((ctx.attempt, "herald-first-failure" in ctx.message.headers))
        if ctx.attempt < 3:
            raise RuntimeError(f"transient failure {ctx.attempt}")

    async with env.connect() as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=7))
        await attempts.wait_for(3)
        await worker.stop()
        assert [a for a, _ in attempts.items] == [1, 2, 3]
        features = await env.features()
        if features.retry_headers:
            assert [h for _, h in attempts.items] == [False, True, True]
        assert await bus.dead_letters(service.name) == []


@scenario()
async def retry_then_dead_letter_with_reason_and_replay(env: Environment) -> None:
    calls: Recorder[int] = Recorder()
    healed = asyncio.Event()
    service = Service(env.service_name("broken"), retry=FAST_RETRY)

    @service.on(Tick)
    async def broken(event: Tick, ctx: Context) -> None:
        calls.add(ctx.attempt)
        if not healed.is_set():
            raise ValueError(f"cannot handle {event.n}")

    async with env.connect() as bus:
        worker = await bus.start(service)
        sent = await bus.publish(Tick(n=5), key="k5")
        await calls.wait_for(3)
        letters = await _wait_dead_letters(bus, service.name, 1)
        assert calls.items == [1, 2, 3]
        letter = letters[0]
        assert letter.message.id == sent.id and letter.message.subject == "k5"
        assert letter.message.type == "conformance.tick"
        assert letter.reason.error_type == "ValueError"
        assert letter.reason.error_message == "cannot handle 5"
        assert letter.reason.attempts == 3
        assert letter.reason.queue == f"{service.name}.conformance.tick"
        assert letter.reason.first_failure is not None and letter.reason.last_failure is not None
        assert letter.reason.first_failure <= letter.reason.last_failure
        healed.set()
        assert await bus.replay_dead_letters(service.name) == 1
        await calls.wait_for(4)
        assert calls.items[3] == 1, "a replayed dead letter starts again at attempt 1"
        await eventually(lambda: worker.handled >= 4, what="replayed delivery settled")
        assert await bus.dead_letters(service.name) == []
        await worker.stop()


@scenario()
async def dead_letters_can_be_purged(env: Environment) -> None:
    service = Service(env.service_name("rejects"))

    @service.on(Tick)
    async def reject(event: Tick, ctx: Context) -> None:
        raise Reject(f"tick {event.n} is not wanted")

    async with env.connect() as bus:
        worker = await bus.start(service)
        await bus.publish_many(Tick(n=n) for n in range(3))
        letters = await _wait_dead_letters(bus, service.name, 3)
        assert {dl.reason.error_type for dl in letters} == {"Reject"}
        assert all(dl.reason.attempts == 1 for dl in letters), "Reject skips retries"
        one = letters[0].message.id
        assert await bus.purge_dead_letters(service.name, [one]) == 1
        remaining = await bus.dead_letters(service.name)
        assert one not in {dl.message.id for dl in remaining} and len(remaining) == 2
        assert await bus.purge_dead_letters(service.name) == 2
        assert await bus.dead_letters(service.name) == []
        await worker.stop()


@scenario()
async def poison_messages_are_dead_lettered_at_once(env: Environment) -> None:
    seen: Recorder[int] = Recorder()
    service = tick_service(env, "poison", seen)
    async with env.connect() as bus:
        worker = await bus.start(service)
        await bus.publish(Message(type="conformance.tick", body=b"{not json"))
        await bus.publish(Message(type="conformance.tick", body=b'{"n": "seven"}'))
        await bus.publish(Message(type="conformance.tick", body=b"\x00", datacontenttype="x/y"))
        await bus.publish(Tick(n=42))
        await seen.wait_for(1)
        letters = await _wait_dead_letters(bus, service.name, 3)
        kinds = sorted(dl.reason.error_type for dl in letters)
        assert kinds == ["DecodeError", "DecodeError", "ValidationError"], kinds
        assert all(dl.reason.attempts == 1 for dl in letters), "no retries for poison"
        assert any("n" in dl.reason.error_message for dl in letters if "Valid" in str(dl.reason))
        assert seen.items == [42], "the consumer survived and kept going"
        await worker.stop()


@scenario()
async def ordering_per_key_under_concurrency(env: Environment) -> None:
    keys, per_key = 10, 30
    order: dict[str, list[int]] = defaultdict(list)
    done: Recorder[int] = Recorder()
    running = Counter[str]()
    overlap: list[str] = []
    service = Service(env.service_name("ordered"), concurrency=8)

    @service.on(Keyed)
    async def handle(event: Keyed, ctx: Context) -> None:
        running[event.key] += 1
        if running[event.key] > 1:
            overlap.append(event.key)
        await asyncio.sleep(random.uniform(0, 0.004))
        order[event.key].append(event.seq)
        running[event.key] -= 1
        done.add(1)

    async with env.connect() as bus:
        worker = await bus.start(service)
        events = [(Keyed(key=f"k{k}", seq=s), f"k{k}") for s in range(per_key) for k in range(keys)]
        await bus.publish_many(events)
        await done.wait_for(keys * per_key, timeout=60)
        await worker.stop()
    assert not overlap, f"events with the same key ran concurrently: {overlap[:5]}"
    for key, seqs in order.items():
        assert seqs == list(range(per_key)), f"key {key} handled out of order: {seqs}"


@scenario()
async def graceful_shutdown_finishes_in_flight_and_keeps_the_rest(env: Environment) -> None:
    started: Recorder[int] = Recorder()
    finished: Recorder[int] = Recorder()
    service = Service(env.service_name("graceful"), concurrency=2, prefetch=4)

    @service.on(Tick)
    async def slow(event: Tick, ctx: Context) -> None:
        started.add(event.n)
        await asyncio.sleep(0.4)
        finished.add(event.n)

    async with env.connect() as bus:
        worker = await bus.start(service)
        await bus.publish_many(Tick(n=n) for n in range(8))
        await started.wait_for(2)
        in_flight = set(started.items)
        await worker.stop(timeout=5.0)
        assert in_flight <= set(finished.items), "in-flight handlers ran to completion"
        first_round = set(finished.items)
        assert len(first_round) < 8, "shutdown stopped taking new deliveries"
        worker = await bus.start(service)
        await eventually(lambda: set(finished.items) >= set(range(8)), timeout=20, what="rest")
        await worker.stop()
    redone = [n for n in finished.items if n in first_round]
    assert Counter(redone) == Counter(first_round), "acked events were not redelivered"


@scenario()
async def shutdown_deadline_cancels_and_redelivers(env: Environment) -> None:
    started: Recorder[int] = Recorder()
    finished: Recorder[int] = Recorder()
    service = Service(env.service_name("stuck"), concurrency=1)

    @service.on(Tick)
    async def stuck(event: Tick, ctx: Context) -> None:
        started.add(event.n)
        if len(started) == 1:
            await asyncio.sleep(60)
        finished.add(event.n)

    async with env.connect() as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=9))
        await started.wait_for(1)
        t0 = time.monotonic()
        await worker.stop(timeout=0.3)
        assert time.monotonic() - t0 < 10, "stop() honoured its deadline"
        assert finished.items == []
        worker = await bus.start(service)
        await finished.wait_for(1, timeout=60)
        await worker.stop()
    assert finished.items == [9]


@scenario()
async def large_message(env: Environment) -> None:
    features = await env.features()
    size = min(MiB, features.max_message_bytes - 64 * 1024)
    received: Recorder[Message] = Recorder()
    service = Service(env.service_name("large"))

    @service.on("conformance.blob")
    async def take(message: Message, ctx: Context) -> None:
        received.add(message)

    data = os.urandom(size // 2).hex()
    async with env.connect() as bus:
        worker = await bus.start(service)
        await bus.publish(Blob(data=data))
        (message,) = await received.wait_for(1, timeout=30)
        assert Blob.model_validate_json(message.body).data == data
        if features.max_message_bytes < MiB + 64 * 1024:
            try:
                await bus.publish(Blob(data="x" * features.max_message_bytes))
            except BrokerError as exc:
                assert str(exc), "an oversized message is refused with a reason"
            else:
                raise AssertionError("an oversized message must be refused, not dropped")
        await worker.stop()
    digest = hashlib.sha256(data.encode()).hexdigest()
    assert (
        hashlib.sha256(Blob.model_validate_json(message.body).data.encode()).hexdigest() == digest
    )


@scenario()
async def stream_of_ten_thousand(env: Environment) -> None:
    seen: Recorder[int] = Recorder()
    async with env.connect() as bus:
        worker = await bus.start(tick_service(env, "stream", seen, concurrency=32))
        for start in range(0, 10_000, 500):
            await bus.publish_many(Tick(n=n) for n in range(start, start + 500))
        await seen.wait_for(10_000, timeout=180)
        await worker.stop()
    assert set(seen.items) == set(range(10_000))


@scenario("multi_process")
async def consumer_killed_mid_stream_loses_nothing(env: Environment) -> None:
    total = 300
    name = env.service_name("killed")
    out = env.workdir / f"{name}.out"
    async with env.connect() as bus:
        await bus.broker.declare(tick_service(env, "killed", Recorder()).handlers[0].subscription)
    child = _spawn_child(env.url, name, out, delay=0.01)
    try:
        await publish_ticks(env, range(total))
        await eventually(lambda: len(_handled(out)) >= 40, timeout=60, what="child progress")
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        before = set(_handled(out))
        assert len(before) < total, "the kill happened mid-stream"
        child = _spawn_child(env.url, name, out, delay=0.0)
        await eventually(lambda: set(_handled(out)) >= set(range(total)), timeout=120, what="all")
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
    counts = Counter(_handled(out))
    assert set(counts) == set(range(total))
    assert max(counts.values()) <= 2, "only events in flight at the kill are handled twice"


@scenario("restartable")
async def broker_restart_under_load_loses_nothing(env: Environment) -> None:
    assert env.restart_broker is not None, "a restartable broker needs a restart hook"
    total = 10_000
    first: Recorder[int] = Recorder()
    second: Recorder[int] = Recorder()
    async with env.connect() as bus:
        workers = [
            await bus.start(tick_service(env, "restart-a", first, concurrency=32)),
            await bus.start(tick_service(env, "restart-b", second, concurrency=32)),
        ]
        publisher = asyncio.create_task(_publish_through_outage(env, total))
        await eventually(lambda: len(first) > total // 5, timeout=120, what="load before restart")
        await env.restart_broker()
        await publisher
        await eventually(
            lambda: (
                set(first.items) >= set(range(total)) and set(second.items) >= set(range(total))
            ),
            timeout=240,
            what="every event handled by both services",
        )
        for worker in workers:
            await worker.stop()


async def _publish_through_outage(env: Environment, total: int) -> None:
    async with env.connect() as bus:
        for start in range(0, total, 100):
            batch = [Tick(n=n) for n in range(start, min(start + 100, total))]
            deadline = time.monotonic() + 120
            while True:
                try:
                    await bus.publish_many(batch)
                    break
                except BrokerError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            await asyncio.sleep(0.005)


async def _wait_dead_letters(bus: Bus, service: str, count: int) -> list[DeadLetter]:
    deadline = time.monotonic() + 30
    while True:
        letters = await bus.dead_letters(service)
        if len(letters) >= count:
            return letters
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(letters)} of {count} dead letters after 30s")
        await asyncio.sleep(0.05)


def _spawn_child(
    url: str, service: str, out: os.PathLike[str], delay: float
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "herald.testing.child", url, service, os.fspath(out), str(delay)],
        stdin=subprocess.DEVNULL,
    )


def _handled(path: os.PathLike[str]) -> list[int]:
    try:
        with open(path) as f:
            return [int(line) for line in f.read().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


class Square(Event, type="conformance.square"):
    n: int


class SquareReply(pydantic.BaseModel):
    value: int
    handled_by: str


class Missing(ExpectedError):
    """A declared error of the conformance suite's RPC service."""


def maths_service(env: Environment) -> Service:
    service = Service(env.service_name("maths"))

    @service.rpc(Square)
    async def square(request: Square, ctx: Context) -> SquareReply:
        if request.n == 404:
            raise Missing(f"no square for {request.n}", n=request.n)
        if request.n == 500:
            raise ZeroDivisionError("boom")
        if request.n == 408:
            await asyncio.sleep(5)
        return SquareReply(value=request.n * request.n, handled_by=ctx.service)

    return service


@scenario()
async def request_reply(env: Environment) -> None:
    service = maths_service(env)
    async with env.connect() as bus:
        worker = await bus.start(service)
        replies = await asyncio.gather(
            *(bus.request(Square(n=n), SquareReply, timeout=20) for n in range(20))
        )
        assert [r.value for r in replies] == [n * n for n in range(20)]
        assert {r.handled_by for r in replies} == {service.name}
        await worker.stop()


@scenario()
async def request_errors_come_back_typed(env: Environment) -> None:
    service = maths_service(env)
    async with env.connect() as bus:
        worker = await bus.start(service)
        try:
            await bus.request(Square(n=404), SquareReply, timeout=20)
        except Missing as exc:
            assert exc.message == "no square for 404" and exc.data == {"n": 404}
        else:
            raise AssertionError("a declared error is raised again on the caller")
        try:
            await bus.request(Square(n=500), SquareReply, timeout=20)
        except RemoteError as exc:
            assert (exc.error_type, exc.message) == ("ZeroDivisionError", "boom")
        else:
            raise AssertionError("a handler crash comes back as RemoteError")
        t0 = time.monotonic()
        try:
            await bus.request(Square(n=408), SquareReply, timeout=0.5)
        except HeraldTimeoutError as exc:
            assert "conformance.square" in str(exc)
        else:
            raise AssertionError("no reply in time raises herald.TimeoutError")
        assert time.monotonic() - t0 < 3
        ok = await bus.request(Square(n=3), SquareReply, timeout=20)
        assert ok.value == 9, "the bus keeps working after a timeout"
        await worker.stop(timeout=0.2)
