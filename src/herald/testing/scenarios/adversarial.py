"""Input from a hostile or broken publisher: forged runtime headers, forged reply
addresses, handlers that cancel themselves, odd bytes in every field.

Whatever arrives, a consumer never stalls, spins or crashes, and nothing is lost:
each message is handled, or dead-lettered with a reason that names the problem, or
refused at publish with a Herald error.
"""

from __future__ import annotations

import asyncio

from ...context import Context
from ...errors import HeraldError
from ...headers import REPLY_TO
from ...message import Message
from ...rpc import request_type
from ...service import Service
from ..environment import Environment
from ..events import Tick
from ..recorder import Recorder, eventually
from .common import FAST_RETRY, tick_service, wait_dead_letters
from .rpc import Square, SquareReply, maths_service

__all__ = [
    "forged_reply_addresses_are_refused",
    "forged_runtime_headers_never_stall_a_queue",
    "handler_cancelling_itself_is_retried_then_dead_lettered",
    "odd_bytes_in_every_field_round_trip_or_are_refused",
]


async def forged_runtime_headers_never_stall_a_queue(env: Environment) -> None:
    calls: Recorder[tuple[int, int]] = Recorder()
    service = Service(env.service_name("forged"), concurrency=2, prefetch=2, retry=FAST_RETRY)

    @service.on(Tick)
    async def record(event: Tick, ctx: Context) -> None:
        calls.add((event.n, ctx.attempt))

    forged_first_failure = {1: "not a time", 2: "x" * 10_000}
    forged_attempt = {3: "-1000000000", 4: "999999999", 5: "NaN", 6: "0"}
    messages = [
        Message(type="conformance.tick", body=f'{{"n": {n}}}'.encode(), headers={h: v})
        for n, (h, v) in [
            *((n, ("herald-first-failure", v)) for n, v in forged_first_failure.items()),
            *((n, ("herald-attempt", v)) for n, v in forged_attempt.items()),
            (7, ("herald-dl-attempts", "lots")),
        ]
    ]
    async with env.connect() as bus:
        worker = await bus.start(service)
        for message in messages:
            await bus.send([message])
        await bus.publish(Tick(n=8))
        await eventually(lambda: (8, 1) in calls.items, timeout=30, what="the good message")
        await eventually(lambda: worker.handled >= 8, timeout=30, what="every delivery settled")
        letters = {dl.message.id: dl.reason for dl in await bus.dead_letters(service.name)}
        await worker.stop()
    handled = _attempts_by_n(calls.items)
    for n in forged_first_failure:
        reason = letters[messages[n - 1].id]
        assert reason.error_type == "HeaderError" and "herald-first-failure" in reason.error_message
        assert reason.attempts == 1 and n not in handled, "never handled, dead-lettered at once"
    for n in forged_attempt:
        message_id = messages[n - 1].id
        if message_id in letters:
            reason = letters[message_id]
            assert reason.error_type == "HeaderError" and "herald-attempt" in reason.error_message
            assert n not in handled
        else:
            assert handled[n] == [1], f"tick {n}: handled once at attempt 1, got {handled[n]}"
    assert handled[7] == [1] and handled[8] == [1]


def _attempts_by_n(items: list[tuple[int, int]]) -> dict[int, list[int]]:
    attempts: dict[int, list[int]] = {}
    for n, attempt in items:
        attempts.setdefault(n, []).append(attempt)
    return attempts


async def forged_reply_addresses_are_refused(env: Environment) -> None:
    victim: Recorder[int] = Recorder()
    calls: list[int] = []
    maths = maths_service(env, calls)
    bystander = tick_service(env, "bystander", victim)
    forged = [
        "conformance.tick",
        "herald.reply.not-hex",
        "_INBOX.x\r\nPUB conformance.tick 9\r\n{}",
        "amq.rabbitmq.reply-to.x y",
        "",
    ]
    requests = [
        Message(
            type=request_type(Square.event_type()),
            body=b'{"n": 2}',
            headers={REPLY_TO: address, "herald-correlation-id": "forged"},
        )
        for address in forged
    ]
    async with env.connect() as bus:
        workers = [await bus.start(maths), await bus.start(bystander)]
        for request in requests:
            await bus.send([request])
        letters = await wait_dead_letters(bus, maths.name, len(requests))
        ok = await bus.request(Square(n=3), SquareReply, timeout=20)
        await bus.publish(Tick(n=1))
        await victim.wait_for(1)
        await asyncio.sleep(0.3)
        for worker in workers:
            await worker.stop()
    assert ok.value == 9
    assert victim.items == [1], f"a forged reply reached a subscriber: {victim.items}"
    assert calls == [3], "the handler never ran for a request it could not answer"
    by_id = {dl.message.id: dl.reason for dl in letters}
    for request in requests:
        reason = by_id[request.id]
        assert reason.error_type == "HeaderError" and REPLY_TO in reason.error_message, reason


async def handler_cancelling_itself_is_retried_then_dead_lettered(env: Environment) -> None:
    calls: Recorder[tuple[int, int]] = Recorder()
    service = Service(env.service_name("self-cancel"), retry=FAST_RETRY)

    @service.on(Tick)
    async def cancels(event: Tick, ctx: Context) -> None:
        calls.add((event.n, ctx.attempt))
        if event.n == 1:
            own = asyncio.ensure_future(asyncio.sleep(10))
            own.cancel()
            await own

    async with env.connect() as bus:
        worker = await bus.start(service)
        await bus.publish(Tick(n=1))
        (letter,) = await wait_dead_letters(bus, service.name, 1)
        await bus.publish(Tick(n=2))
        await eventually(lambda: (2, 1) in calls.items, what="the next message")
        await asyncio.sleep(0.3)
        await worker.stop()
    assert [a for n, a in calls.items if n == 1] == [1, 2, 3], calls.items
    assert letter.reason.error_type == "CancelledError" and letter.reason.attempts == 3


async def odd_bytes_in_every_field_round_trip_or_are_refused(env: Environment) -> None:
    got: Recorder[Message] = Recorder()
    service = Service(env.service_name("odd"))

    @service.on("conformance.#")
    async def take(message: Message, ctx: Context) -> None:
        got.add(message)

    odd = "\r\n\x00\x1b[31m\t é✓ \U0001f980 %00 ${x} ' \" ; -- */"
    samples = [
        Message(type="conformance.odd", body=b'{"ok": 1}', subject=f"key{odd}"),
        Message(type="conformance.odd", body=b'{"ok": 2}', source=f"src{odd}"),
        Message(type="conformance.odd", body=b'{"ok": 3}', id=f"id{odd}"),
        Message(type="conformance.odd", body=b'{"ok": 4}', headers={"x-odd": f"v{odd}"}),
        Message(type="conformance.odd", body=b'{"ok": 5}', headers={f"x-{odd}": "v"}),
        Message(type="conformance.odd", body=b'{"ok": 6}', headers={"x-long": "v" * 60_000}),
        Message(type="conformance.odd", body=odd.encode() + bytes(range(256))),
        Message(
            type="conformance.odd", body=b'{"ok": 8}', datacontenttype=f"application/json{odd}"
        ),
    ]
    sent: list[Message] = []
    refused: list[tuple[Message, HeraldError]] = []
    async with env.connect() as bus:
        worker = await bus.start(service)
        for message in samples:
            try:
                await bus.send([message])
            except HeraldError as exc:
                refused.append((message, exc))
            else:
                sent.append(message)
        await bus.publish(Tick(n=1))
        await eventually(
            lambda: any(m.type == "conformance.tick" for m in got.items), what="the good message"
        )
        await got.wait_for(len(sent) + 1, timeout=30)
        await asyncio.sleep(0.3)
        await worker.stop()
    for message, error in refused:
        assert str(error), f"{message!r} refused without a reason"
    received = {m.id: m for m in got.items}
    for message in sent:
        arrived = received.get(message.id)
        assert arrived is not None, f"lost: {message!r}"
        assert arrived.attributes() == message.attributes(), (message, arrived)
        assert arrived.body == message.body
        for name, value in message.headers.items():
            assert arrived.headers.get(name) == value, f"header {name!r} changed in transit"
