"""What ``nats://`` offers beyond the core contract: queue inspection, dead-letter
admin with retention, and the runtime's handling of what the adapter hands it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client

import herald
from herald.broker import Prefetch, Subscription
from herald.brokers.nats import NATSBroker
from herald.brokers.nats.wire import to_headers
from herald.capabilities import DeadLetterAdmin, QueueInspection, ReplyCapable, RetainedHistory
from herald.deadletter import DeadLetter, DeadLetterReason
from herald.errors import BrokerError, CapabilityError
from herald.testing import eventually

from .support import (
    connected,
    counts_become,
    nats_url,
    next_delivery,
    number,
    require_nats,
    tick,
)

pytestmark = pytest.mark.nats
PAYROLL = Subscription("payroll", "employee.created")
GIFTS = Subscription("gifts", "employee.created")


async def stats_of(broker: NATSBroker, queue: str) -> herald.QueueStats:
    (stats,) = await broker.inspect_queues([queue])
    return stats


async def test_capabilities_are_declared(broker: NATSBroker) -> None:
    assert isinstance(broker, DeadLetterAdmin)
    assert isinstance(broker, QueueInspection)
    assert isinstance(broker, ReplyCapable)


async def test_queue_inspection_counts_exactly(broker: NATSBroker) -> None:
    await broker.declare(PAYROLL)
    await broker.declare(GIFTS)
    await broker.publish([tick(n) for n in range(5)])
    stream = broker.consume(PAYROLL, Prefetch(messages=2))
    held = [await next_delivery(stream), await next_delivery(stream)]
    payroll = await counts_become(broker, PAYROLL.queue, (3, 2, 1))
    gifts, listed = await broker.inspect_queues()
    assert (gifts.queue, listed.queue) == (GIFTS.queue, PAYROLL.queue), "sorted by name"
    assert (gifts.depth, gifts.in_flight, gifts.consumers) == (5, 0, 0)
    assert payroll.oldest_age is not None and payroll.oldest_age > 0
    assert gifts.oldest_age is not None and gifts.oldest_age > 0
    assert [s.queue for s in await broker.inspect_queues([PAYROLL.queue, "nobody.x"])] == [
        PAYROLL.queue
    ], "unknown queues are left out"
    await asyncio.sleep(0.2)
    assert (await stats_of(broker, PAYROLL.queue)).oldest_age > payroll.oldest_age

    second = broker.consume(PAYROLL, Prefetch(messages=1))
    third = await next_delivery(second)
    await counts_become(broker, PAYROLL.queue, (2, 3, 2))
    await held[0].retry(60, {})  # JetStream keeps it unacked; it waits, nobody holds it
    await counts_become(broker, PAYROLL.queue, (2, 3, 2))  # its slot was filled again
    await second.aclose()  # the consumer stops; what it handed out is still held
    await counts_become(broker, PAYROLL.queue, (2, 3, 1))
    await third.ack()
    await counts_become(broker, PAYROLL.queue, (2, 2, 1))
    await held[1].ack()
    for _ in range(2):
        await (await next_delivery(stream)).ack()
    await counts_become(broker, PAYROLL.queue, (1, 0, 1))  # only the retry, waiting
    await broker.publish([tick(5)])
    last = await next_delivery(stream)
    await stream.aclose()
    await last.release()
    await counts_become(broker, PAYROLL.queue, (2, 0, 0))  # released with nobody pulling


async def test_dead_letter_then_replay_reaches_only_that_queue(broker: NATSBroker) -> None:
    await broker.declare(PAYROLL)
    await broker.declare(GIFTS)
    sent = tick(7)
    await broker.publish([sent])
    pay_stream, gift_stream = (
        broker.consume(PAYROLL, Prefetch(4)),
        broker.consume(GIFTS, Prefetch(4)),
    )
    failing = await next_delivery(pay_stream)
    when = datetime.now(UTC)
    reason = DeadLetterReason(PAYROLL.queue, "KeyError", "'salary'\nsecond line", 1, when, when)
    await failing.dead_letter(reason)
    await (await next_delivery(gift_stream)).ack()
    (letter,) = await broker.dead_letters("payroll")
    assert letter.message == sent and letter.reason == reason
    assert await broker.replay_dead_letters("payroll") == 1
    replayed = await next_delivery(pay_stream)
    assert replayed.message.id == sent.id and replayed.attempt == 1
    await replayed.ack()
    await broker.publish([tick(8)])
    following = await next_delivery(gift_stream)
    assert number(following) == 8, "gifts must not get the replay"
    await following.ack()
    assert await broker.dead_letters("payroll") == []
    assert await broker.purge_dead_letters("payroll") == 0
    await pay_stream.aclose()
    await gift_stream.aclose()


async def test_a_forged_dead_letter_cannot_steer_a_replay(broker: NATSBroker, raw: Client) -> None:
    await broker.declare(PAYROLL)
    await broker.declare(GIFTS)
    genuine = DeadLetter(tick(1), DeadLetterReason(PAYROLL.queue, "E", "x", 1))
    forged = DeadLetter(tick(2), DeadLetterReason(GIFTS.queue, "E", "x", 1))
    missing = DeadLetter(tick(3), DeadLetterReason("payroll.gone", "E", "x", 1))
    subject = broker.names.dlq_subject("payroll")
    for letter in (genuine, forged):
        stored = letter.to_stored()
        await raw.jetstream().publish(subject, stored.body, headers=to_headers(stored))
    with pytest.raises(BrokerError, match="not one of its queues"):
        await broker.replay_dead_letters("payroll")
    assert len(await broker.dead_letters("payroll")) == 2, "nothing was replayed"
    assert (await stats_of(broker, GIFTS.queue)).depth == 0
    assert await broker.purge_dead_letters("payroll", ids=[forged.message.id]) == 1
    stored = missing.to_stored()
    await raw.jetstream().publish(subject, stored.body, headers=to_headers(stored))
    with pytest.raises(BrokerError, match="no longer exists"):
        await broker.replay_dead_letters("payroll")
    assert await broker.purge_dead_letters("payroll", ids=[missing.message.id]) == 1
    assert await broker.replay_dead_letters("payroll") == 1
    assert (await stats_of(broker, PAYROLL.queue)).depth == 1


async def test_unreadable_dead_letters_are_listed_and_purgeable(
    broker: NATSBroker, raw: Client
) -> None:
    subject = broker.names.dlq_subject("payroll")
    ack = await raw.jetstream().publish(subject, b"junk", headers={"Herald-B64": "a", "a": "!"})
    (letter,) = await broker.dead_letters("payroll")
    assert letter.message.id == f"nats-dlq-{ack.seq}" and letter.message.body == b"junk"
    assert await broker.purge_dead_letters("payroll", ids=[letter.message.id]) == 1


async def test_dead_letters_expire_after_dlq_retention() -> None:
    require_nats()
    namespace = f"tnret{uuid.uuid4().hex[:8]}"
    keeping = await connected(nats_url(namespace=namespace))
    try:
        await keeping.declare(PAYROLL)
        await keeping.publish([tick(1)])
        stream = keeping.consume(PAYROLL, Prefetch(4))
        delivery = await next_delivery(stream)
        await delivery.dead_letter(DeadLetterReason(PAYROLL.queue, "E", "x", 1))
        await stream.aclose()
        await asyncio.sleep(1.5)
        assert len(await keeping.dead_letters("payroll")) == 1, "kept 14 days by default"
        short = await connected(nats_url(namespace=namespace, dlq_retention="1"))
        try:

            async def expired() -> bool:
                return await short.dead_letters("payroll") == []

            await eventually(expired, 30, "the dead letter to expire")
        finally:
            await short.close()
    finally:
        await keeping.destroy()
        await keeping.close()


async def test_the_runtime_dead_letters_what_the_adapter_could_not_decode(raw: Client) -> None:
    require_nats()
    seen: list[int] = []
    service = herald.Service("decoding")

    class Tick(herald.Event, type="employee.created"):
        n: int

    @service.on(Tick)
    async def handle(event: Tick) -> None:
        seen.append(event.n)

    async with herald.connect(nats_url()) as bus:
        broker = bus.broker
        assert isinstance(broker, NATSBroker)
        try:
            worker = await bus.start(service)
            subject = broker.names.event_subject("employee.created")
            headers = {"cloudEvents_time": "yesterday"}
            await raw.jetstream().publish(subject, b'{"n": 1}', headers=headers)
            await bus.publish(Tick(n=2))
            await eventually(lambda: seen == [2], 20, "the good event")

            async def one_letter() -> bool:
                return len(await broker.dead_letters("decoding")) == 1

            await eventually(one_letter, 20, "the undecodable one to be dead-lettered")
            (letter,) = await broker.dead_letters("decoding")
            assert letter.reason.error_type == "DecodeError" and letter.reason.attempts == 1
            assert letter.message.headers == {"herald-raw-cloudEvents_time": "yesterday"}
            assert letter.message.body == b'{"n": 1}'
            await worker.stop()
        finally:
            await broker.destroy()


async def test_destroy_leaves_nothing_behind_while_consumers_still_report(raw: Client) -> None:
    require_nats()
    namespace = f"tnleak{uuid.uuid4().hex[:8]}"
    broker = await connected(nats_url(namespace=namespace))
    await broker.declare(PAYROLL)
    await broker.publish([tick(n) for n in range(3)])
    stream = broker.consume(PAYROLL, Prefetch(messages=2))
    held = await next_delivery(stream)
    await counts_become(broker, PAYROLL.queue, (1, 2, 1))
    await broker.destroy()
    await held.ack()  # this process's report changes after the destroy
    await asyncio.sleep(1.0)
    left = [info.config.name for info in await raw.jetstream().streams_info()]
    await stream.aclose()
    await broker.close()
    assert [name for name in left if namespace in name] == []


async def test_backfill_starts_a_new_consumer_at_the_oldest_or_at_since(
    broker: NATSBroker,
) -> None:
    assert isinstance(broker, RetainedHistory)
    await broker.publish([tick(0)])
    await asyncio.sleep(0.05)
    since = datetime.now(UTC)
    await broker.publish([tick(1), tick(2)])
    assert await broker.backfill(PAYROLL) == 3
    assert await broker.backfill(GIFTS, since) == 2
    assert await broker.backfill(PAYROLL) == 0, "an existing queue gets nothing again"
    await broker.publish([tick(3)])
    for sub, expected in ((PAYROLL, [0, 1, 2, 3]), (GIFTS, [1, 2, 3])):
        stream = broker.consume(sub, Prefetch(messages=8))
        taken = [await next_delivery(stream) for _ in expected]
        assert [number(d) for d in taken] == expected
        for delivery in taken:
            await delivery.ack()
        await stream.aclose()


async def test_backfill_is_refused_with_interest_retention() -> None:
    require_nats()
    broker = await connected(nats_url(retention="interest"))
    try:
        with pytest.raises(CapabilityError, match="retention=interest"):
            await broker.backfill(PAYROLL)
    finally:
        await broker.destroy()
        await broker.close()
