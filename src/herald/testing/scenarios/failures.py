"""Failures: retries, dead letters with their reasons, replay, purge, poison messages."""

from __future__ import annotations

import asyncio

from ...context import Context
from ...deadletter import fingerprint
from ...errors import Reject, ValidationError
from ...message import Message
from ...service import Service
from ..environment import Environment
from ..events import Tick
from ..recorder import Recorder, eventually
from .common import FAST_RETRY, tick_service, wait_dead_letters

__all__ = [
    "dead_letters_can_be_purged",
    "edited_dead_letter_is_replayed_as_a_first_attempt",
    "poison_messages_are_dead_lettered_at_once",
    "retry_then_dead_letter_with_reason_and_replay",
    "retry_then_success",
]


async def retry_then_success(env: Environment) -> None:
    attempts: Recorder[tuple[int, bool]] = Recorder()
    service = Service(env.service_name("flaky"), retry=FAST_RETRY)

    @service.on(Tick)
    async def flaky(event: Tick, ctx: Context) -> None:
        attempts.add((ctx.attempt, "herald-first-failure" in ctx.message.headers))
        if ctx.attempt < 3:
            raise RuntimeError(f"transient failure {ctx.attempt}")

    features = await env.features()
    async with env.connect() as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=7))
        await attempts.wait_for(3)
        await eventually(lambda: worker.handled >= 3, what="third attempt settled")
        await asyncio.sleep(0.3)
        await worker.stop()
        assert await bus.dead_letters(service.name) == []
    assert [a for a, _ in attempts.items] == [1, 2, 3], attempts.items
    headers_seen = [h for _, h in attempts.items]
    expected = [False, True, True] if features.retry_headers else [False, False, False]
    assert headers_seen == expected, f"retry headers: {headers_seen}"


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
        letters = await wait_dead_letters(bus, service.name, 1)
        assert calls.items == [1, 2, 3]
        letter = letters[0]
        assert letter.message.id == sent.id and letter.message.subject == "k5"
        assert letter.message.type == "conformance.tick" and letter.message.body == sent.body
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


async def dead_letters_can_be_purged(env: Environment) -> None:
    service = Service(env.service_name("rejects"))

    @service.on(Tick)
    async def reject(event: Tick, ctx: Context) -> None:
        raise Reject(f"tick {event.n} is not wanted")

    async with env.connect() as bus:
        worker = await bus.start(service)
        await bus.publish_many(Tick(n=n) for n in range(3))
        letters = await wait_dead_letters(bus, service.name, 3)
        assert {dl.reason.error_type for dl in letters} == {"Reject"}
        assert {dl.reason.error_message for dl in letters} == {
            f"tick {n} is not wanted" for n in range(3)
        }
        assert all(dl.reason.attempts == 1 for dl in letters), "Reject skips retries"
        one = letters[0].message.id
        assert await bus.purge_dead_letters(service.name, [one]) == 1
        remaining = await bus.dead_letters(service.name)
        assert one not in {dl.message.id for dl in remaining} and len(remaining) == 2
        assert await bus.purge_dead_letters(service.name) == 2
        assert await bus.dead_letters(service.name) == []
        await worker.stop()


async def edited_dead_letter_is_replayed_as_a_first_attempt(env: Environment) -> None:
    handled: Recorder[tuple[int, int, str | None, str | None, str]] = Recorder()
    healed = asyncio.Event()
    service = Service(env.service_name("edits"))

    @service.on(Tick)
    async def no_negatives(event: Tick, ctx: Context) -> None:
        if event.n < 0 and not healed.is_set():
            raise Reject(f"tick {event.n} is negative")
        message = ctx.message
        handled.add((event.n, ctx.attempt, message.headers.get("x-fixed"), message.key, message.id))

    async with env.connect() as bus:
        worker = await bus.start(service)
        first = await bus.publish(Tick(n=-1), key="k1", headers={"x-origin": "test"})
        await bus.publish_many([Tick(n=-2), Tick(n=-3)])
        letters = await wait_dead_letters(bus, service.name, 3)
        assert {fingerprint(dl) for dl in letters} == {"Reject: tick <n> is negative"}
        try:
            await bus.replay_edited_dead_letter(
                service.name, first.id, b'{"n": "one"}', None, event_class=Tick
            )
        except ValidationError as exc:
            assert "n: " in str(exc), exc
        else:
            raise AssertionError("an edited body that is not a Tick was replayed")

        sent = await bus.replay_edited_dead_letter(  # NotFound if the refused edit took it
            service.name, first.id, b'{"n": 1}', {"x-fixed": "yes"}, event_class=Tick
        )
        assert sent.id == first.id and dict(sent.headers) == {"x-fixed": "yes"}
        await handled.wait_for(1)
        assert handled.items == [(1, 1, "yes", "k1", first.id)], "edited, first attempt, same key"
        rest = [dl.message.id for dl in await bus.dead_letters(service.name)]
        assert len(rest) == 2 and first.id not in rest

        healed.set()
        progress: list[tuple[int, int]] = []
        replayed = await bus.replay_dead_letters(
            service.name, rest, lambda done, total: progress.append((done, total))
        )
        assert replayed == 2 and progress and progress[-1] == (2, 2), progress
        assert [d for d, _ in progress] == sorted(d for d, _ in progress), progress
        await handled.wait_for(3)
        assert sorted(n for n, *_ in handled.items) == [-3, -2, 1]
        await eventually(lambda: worker.handled >= 6, what="replayed deliveries settled")
        assert await bus.dead_letters(service.name) == []
        await worker.stop()


async def poison_messages_are_dead_lettered_at_once(env: Environment) -> None:
    seen: Recorder[int] = Recorder()
    service = tick_service(env, "poison", seen, retry=FAST_RETRY)
    poison = {
        "not-json": Message(type="conformance.tick", body=b"{not json"),
        "wrong-type": Message(type="conformance.tick", body=b'{"n": "seven"}'),
        "unknown-codec": Message(type="conformance.tick", body=b"\x00", datacontenttype="x/y"),
    }
    async with env.connect() as bus:
        worker = await bus.start(service)
        for message in poison.values():
            await bus.publish(message)
        await bus.publish(Tick(n=42))
        await seen.wait_for(1)
        letters = {dl.message.id: dl for dl in await wait_dead_letters(bus, service.name, 3)}
        await worker.stop()
    reasons = {name: letters[m.id].reason for name, m in poison.items()}
    assert reasons["not-json"].error_type == "DecodeError"
    assert reasons["not-json"].error_message.startswith("body is not valid JSON")
    assert reasons["wrong-type"].error_type == "ValidationError"
    assert reasons["wrong-type"].error_message.startswith("invalid Tick: n: ")
    assert reasons["unknown-codec"].error_type == "DecodeError"
    assert "no codec for content type 'x/y'" in reasons["unknown-codec"].error_message
    assert all(r.attempts == 1 for r in reasons.values()), "no retries for poison"
    assert seen.items == [42], "the consumer survived and kept going"
