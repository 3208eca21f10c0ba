"""The middleware pipeline: order, outcomes, short cuts, failures, publish headers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest

import herald
from herald.journal import log_started
from herald.middleware import ACK, handler_chain, handling
from herald.testing import Recorder, eventually
from herald.worker import BUILTIN_MIDDLEWARE

FAST = herald.RetryPolicy(attempts=2, initial_delay=0.01, jitter=0)


class Tick(herald.Event, type="mw.tick"):
    n: int


def url() -> str:
    return f"memory://mw-{uuid.uuid4().hex[:8]}"


class Trace(herald.Middleware):
    """Records (name, event) around handling and stamps published messages."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def handle(self, ctx: herald.Context, call_next: herald.Next) -> herald.Outcome:
        self.log.append(f"{self.name}>")
        outcome = await call_next(ctx)
        self.log.append(f"<{self.name}:{outcome.label}")
        return outcome

    async def publish(
        self, messages: Sequence[herald.Message], call_next: herald.PublishNext
    ) -> None:
        stamped = [m.with_headers({f"x-{self.name}": "1"}) for m in messages]
        await call_next(stamped)


async def test_bus_then_service_middleware_around_the_handler_seeing_each_outcome() -> None:
    log: list[str] = []
    service = herald.Service("ordered-mw", retry=FAST, middleware=[Trace("svc", log)])

    @service.on(Tick)
    async def handle(event: Tick) -> None:
        log.append(f"handler {event.n}")
        if event.n == 2:
            raise RuntimeError("always")

    async with herald.connect(url(), middleware=[Trace("bus", log)]) as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=1))
        await eventually(lambda: "<bus:acked" in log)
        await bus.publish(Tick(n=2))
        await eventually(lambda: "<bus:dead-lettered" in log)
        await worker.stop()
    assert log[:5] == ["bus>", "svc>", "handler 1", "<svc:acked", "<bus:acked"]
    assert log[5:] == [
        "bus>", "svc>", "handler 2", "<svc:retried", "<bus:retried",
        "bus>", "svc>", "handler 2", "<svc:dead-lettered", "<bus:dead-lettered",
    ]  # fmt: skip


async def test_publish_middleware_adds_headers_bus_wide_and_per_service() -> None:
    got: Recorder[herald.Message] = Recorder()
    log: list[str] = []
    relay = herald.Service("relay", middleware=[Trace("svc", log)])
    sink = herald.Service("sink")

    @relay.on(Tick)
    async def forward(event: Tick, ctx: herald.Context) -> None:
        await ctx.publish(herald.Message(type="mw.forwarded", body=b"{}"))

    @sink.on("mw.#")
    async def record(message: herald.Message) -> None:
        got.add(message)

    async with herald.connect(url(), middleware=[Trace("bus", log)]) as bus:
        workers = [await bus.start(relay), await bus.start(sink)]
        sent = await bus.publish(Tick(n=1))
        await got.wait_for(2)
        for worker in workers:
            await worker.stop()
    by_type = {m.type: m for m in got.items}
    assert "x-bus" in by_type["mw.tick"].headers and "x-svc" not in by_type["mw.tick"].headers
    forwarded = by_type["mw.forwarded"].headers
    assert forwarded["x-svc"] == forwarded["x-bus"] == "1"
    assert forwarded["herald-causation-id"] == sent.id


class Dedupe(herald.Middleware):
    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def handle(self, ctx: herald.Context, call_next: herald.Next) -> herald.Outcome:
        if ctx.message.id in self.seen:
            return herald.Outcome("ack")
        outcome = await call_next(ctx)
        if outcome.settlement == "ack":
            self.seen.add(ctx.message.id)
        return outcome


async def test_a_middleware_may_answer_without_calling_the_handler() -> None:
    calls: Recorder[int] = Recorder()
    service = herald.Service("dedupe", middleware=[Dedupe()])

    @service.on(Tick)
    async def handle(event: Tick) -> None:
        calls.add(event.n)

    async with herald.connect(url()) as bus:
        worker = await bus.start(service)
        message = await bus.publish(Tick(n=1))
        await calls.wait_for(1)
        await bus.publish(message)
        await eventually(lambda: worker.handled == 2)
        await worker.stop()
    assert calls.items == [1]


class Broken(herald.Middleware):
    async def handle(self, ctx: herald.Context, call_next: herald.Next) -> herald.Outcome:
        raise LookupError("middleware bug")


class AckToRetry(herald.Middleware):
    async def handle(self, ctx: herald.Context, call_next: herald.Next) -> herald.Outcome:
        outcome = await call_next(ctx)
        if ctx.attempt == 1:
            return herald.Outcome("retry", 0.01, {"x-why": "commit failed"})
        return outcome


async def test_a_failing_middleware_is_retried_then_dead_lettered_never_stalls() -> None:
    service = herald.Service("broken-mw", retry=FAST, middleware=[Broken()])

    @service.on(Tick)
    async def handle(event: Tick) -> None:
        raise AssertionError("never reached")

    async with herald.connect(url()) as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=1))
        await eventually(lambda: worker.handled == 2)
        (letter,) = await bus.dead_letters("broken-mw")
        await worker.stop()
    assert (letter.reason.error_type, letter.reason.error_message) == (
        "LookupError",
        "middleware bug",
    )
    assert letter.reason.attempts == 2


async def test_a_middleware_may_replace_the_outcome() -> None:
    attempts: Recorder[tuple[int, str | None]] = Recorder()
    service = herald.Service("replace", middleware=[AckToRetry()])

    @service.on(Tick)
    async def handle(event: Tick, ctx: herald.Context) -> None:
        attempts.add((ctx.attempt, ctx.message.headers.get("x-why")))

    async with herald.connect(url()) as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=1))
        await attempts.wait_for(2)
        await worker.stop()
    assert attempts.items == [(1, None), (2, "commit failed")]


def test_middleware_must_be_middleware() -> None:
    with pytest.raises(herald.ConfigurationError, match=r"not a herald\.Middleware"):
        herald.Service("x", middleware=[object()])  # type: ignore[list-item]
    with pytest.raises(herald.ConfigurationError, match=r"not a herald\.Middleware"):
        herald.connect("memory://x", middleware=[lambda: None])  # type: ignore[list-item]


async def test_the_handler_timeout_is_a_named_retryable_failure() -> None:
    service = herald.Service("slowpoke", retry=FAST)

    @service.on(Tick, timeout=0.05)
    async def slow(event: Tick) -> None:
        await asyncio.sleep(10)

    async with herald.connect(url()) as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=1))
        await eventually(lambda: worker.handled == 2, timeout=10)
        (letter,) = await bus.dead_letters("slowpoke")
        await worker.stop()
    assert letter.reason.error_type == "TimeoutError"
    assert letter.reason.error_message.endswith("did not finish within 0.05s")


class _Held(herald.Delivery):
    """A delivery that is never settled: only the outcome of the chain matters here."""

    async def _ack(self) -> None: ...

    async def _retry(self, delay: float, headers: object) -> None: ...  # type: ignore[override]

    async def _release(self) -> None: ...

    async def _dead_letter(self, reason: object) -> None: ...  # type: ignore[override]


@pytest.mark.parametrize(
    ("case", "body", "headers", "attempt", "error"),
    [
        ("ok", b'{"n": 1}', {}, 1, None),
        ("raises", b'{"n": 1}', {}, 1, None),
        ("raises", b'{"n": 1}', {}, 3, None),
        ("rejects", b'{"n": 1}', {}, 1, None),
        ("cancelled", b'{"n": 1}', {}, 1, None),
        ("slow", b'{"n": 1}', {}, 1, None),
        ("ok", b"not json", {}, 1, None),
        ("ok", b'{"n": "x"}', {}, 1, None),
        ("ok", b'{"n": 1}', {"dataversion": "zero"}, 1, None),
        ("ok", b'{"n": 1}', {"herald-first-failure": "yesterday"}, 1, None),
        ("ok", b'{"n": 1}', {"herald-first-failure": "2026-01-02T03:04:05+00:00"}, 2, None),
        ("ok", b'{"n": 1}', {}, 4, None),
        ("ok", b'{"n": 1}', {}, 1, herald.DecodeError("bad attributes")),
    ],
)
async def test_the_fused_handling_decides_as_the_builtin_middleware_chain(
    case: str, body: bytes, headers: dict[str, str], attempt: int, error: herald.MessageError | None
) -> None:
    """The worker runs retry, decode and timeout fused into one coroutine
    (``handling``): each kind of delivery gets the outcome the three middlewares give."""
    service = herald.Service("fused", retry=herald.RetryPolicy(attempts=3, jitter=0))
    calls: list[tuple[str, int]] = []

    @service.on(Tick, timeout=0.05)
    async def handle(event: Tick, ctx: herald.Context) -> None:
        calls.append((case, event.n))
        if case == "raises":
            raise RuntimeError("boom")
        if case == "rejects":
            raise herald.Reject("not for us")
        if case == "cancelled":
            raise asyncio.CancelledError
        if case == "slow":
            await asyncio.sleep(1)

    handler = service.handlers[0]

    async def call(ctx: herald.Context) -> herald.Outcome:
        await handler.func(ctx.payload, ctx)
        return ACK

    outcomes = []
    async with herald.connect(url()) as bus:
        for chain in (handler_chain(BUILTIN_MIDDLEWARE, call), handling(log_started)):
            message = herald.Message(type="mw.tick", body=body, headers=headers)
            delivery = _Held(message, handler.subscription, attempt, error=error)
            ctx = herald.Context(bus, delivery, handler, service.name)
            called = len(calls)
            outcome = await chain(ctx)
            reason = outcome.reason
            outcomes.append(
                (
                    outcome.settlement,
                    outcome.delay,
                    sorted(outcome.headers),
                    type(outcome.error),
                    reason and (reason.error_type, reason.error_message, reason.attempts),
                    type(ctx.payload),
                    len(calls) - called,
                )
            )
    assert outcomes[0] == outcomes[1]
