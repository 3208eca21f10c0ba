"""The README's promises about the runtime, each held to a test (on memory://)."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

import herald
from herald.testing import Recorder, eventually


class Tick(herald.Event, type="promise.tick"):
    n: int


def url() -> str:
    return f"memory://promise-{uuid.uuid4().hex[:8]}"


def test_the_default_retry_policy_is_five_attempts_from_half_a_second_doubling() -> None:
    policy = herald.Service("defaults").retry
    assert (policy.attempts, policy.initial_delay, policy.multiplier) == (5, 0.5, 2.0)
    assert 0 < policy.jitter <= 0.1
    delays = [policy.delay(n) for n in range(1, 5)]
    for n, delay in enumerate(delays):
        base = 0.5 * 2**n
        assert base <= delay <= base * (1 + policy.jitter)


async def test_per_handler_attempts_and_retry_override_the_service() -> None:
    calls: Recorder[tuple[str, int]] = Recorder()
    service = herald.Service(
        "overrides", retry=herald.RetryPolicy(attempts=5, initial_delay=0.01, jitter=0)
    )

    @service.on(Tick, attempts=2)
    async def twice(event: Tick, ctx: herald.Context) -> None:
        calls.add(("twice", ctx.attempt))
        raise RuntimeError("no")

    @service.on("promise.#", name="all", retry=herald.RetryPolicy(attempts=3, initial_delay=0.01))
    async def thrice(message: herald.Message, ctx: herald.Context) -> None:
        calls.add(("thrice", ctx.attempt))
        raise RuntimeError("no")

    async with herald.connect(url()) as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=1))
        await eventually(lambda: worker.handled == 5)
        letters = await bus.dead_letters("overrides")
        await worker.stop()
    assert sorted(calls.items) == [
        ("thrice", 1), ("thrice", 2), ("thrice", 3), ("twice", 1), ("twice", 2)
    ]  # fmt: skip
    assert sorted(letter.reason.attempts for letter in letters) == [2, 3]


async def test_serve_honours_its_shutdown_timeout_and_leaves_the_rest_for_redelivery() -> None:
    started = asyncio.Event()
    cancelled: list[int] = []
    service = herald.Service("deadline")

    @service.on(Tick)
    async def stuck(event: Tick) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(event.n)
            raise

    address = url()
    async with herald.connect(address) as bus:
        serving = asyncio.create_task(
            bus.serve(service, shutdown_timeout=0.2, handle_signals=False)
        )

        async def consuming() -> bool:
            return [s.consumers for s in await bus.inspect_queues()] == [1]

        await eventually(consuming, what="serve() consuming")
        await bus.publish(Tick(n=1))
        await started.wait()
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        assert cancelled == [1], "the handler still running at the deadline was cancelled"
        (stats,) = await bus.inspect_queues()
        assert (stats.depth, stats.in_flight) == (1, 0), "and its delivery is back in the queue"


async def test_one_info_line_per_delivery_event(caplog: pytest.LogCaptureFixture) -> None:
    service = herald.Service("logged", retry=herald.RetryPolicy(attempts=2, initial_delay=0.01))

    @service.on(Tick)
    async def handle(event: Tick) -> None:
        if event.n == 2:
            raise RuntimeError("two is bad")

    caplog.set_level(logging.INFO, logger="herald")
    async with herald.connect(url()) as bus:
        worker = await bus.start(service)
        ok = await bus.publish(Tick(n=1))
        bad = await bus.publish(Tick(n=2))
        await eventually(lambda: worker.handled == 3)
        await worker.stop()

    def events(message_id: str) -> list[str]:
        return [
            r.herald["event"]  # type: ignore[attr-defined]
            for r in caplog.records
            if getattr(r, "herald", {}).get("message_id") == message_id
        ]

    assert events(ok.id) == ["received", "started", "finished"]
    assert events(bad.id) == [
        "received", "started", "failed", "received", "started", "dead-lettered"
    ]  # fmt: skip
    finished = next(
        r for r in caplog.records if getattr(r, "herald", {}).get("event") == "finished"
    )
    fields = finished.herald  # type: ignore[attr-defined]
    assert fields["queue"] == "logged.promise.tick" and fields["duration_ms"] >= 0
    assert fields["handler"].endswith("handle") and fields["attempt"] == 1


async def test_errors_derive_from_herald_error_and_keep_their_cause(tmp_path: object) -> None:
    with pytest.raises(herald.HeraldError) as info:
        async with herald.connect("sqlite:////proc/no/such/dir/herald.db") as bus:
            await bus.publish(Tick(n=1))
    assert isinstance(info.value, herald.BrokerError)
    assert info.value.__cause__ is not None, "the driver's error stays as __cause__"
