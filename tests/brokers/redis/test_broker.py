"""The Redis Streams broker beyond the conformance suite: URLs, routing, settlement,
prefetch and undecodable entries, on isolated namespaces of the shared server."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from redis.crc import key_slot

from herald import Context, Service
from herald.broker import Prefetch, Subscription
from herald.brokers import broker_from_url
from herald.brokers.redis import RedisBroker, RedisSettings
from herald.bus import connect
from herald.deadletter import DeadLetterReason
from herald.errors import (
    BrokerError,
    BrokerURLError,
    DecodeError,
    HeaderError,
    MessageTooLargeError,
)
from herald.message import Message
from herald.testing.recorder import Recorder

from .conftest import raw_client, redis_broker, shared_url
from .helpers import counts, number, stats, take, tick, until

pytestmark = pytest.mark.redis

# -- URL and features ---------------------------------------------------------------


def test_url_options_and_validation() -> None:
    b = broker_from_url(
        "rediss://:secret@cache.example:6380/3?namespace=ns&lease=2.5&block=0.2&dlq_retention=60"
    )
    assert isinstance(b, RedisBroker)
    assert b.settings == RedisSettings(
        host="cache.example",
        port=6380,
        db=3,
        password="secret",
        tls=True,
        namespace="ns",
        lease=2.5,
        block=0.2,
        dlq_retention=60.0,
        shown_url=b.settings.shown_url,
    )
    assert "secret" not in b.url and "secret" not in repr(b) and "secret" not in repr(b.settings)
    assert RedisSettings.from_url("redis://h").dlq_retention == 14 * 24 * 3600
    for bad, part in (
        ("redis://127.0.0.1/0?leese=3", "leese"),
        ("redis://127.0.0.1/zero", "database number"),
        ("redis://h1,h2/0", "one host"),
        ("redis:///0", "needs a host"),
        ("redis://h/0?lease=0", "lease"),
        ("redis://h/0?dlq_retention=-1", "dlq_retention"),
    ):
        with pytest.raises(BrokerURLError, match=part):
            broker_from_url(bad)
    assert RedisBroker.schemes == ("redis", "rediss")
    assert not RedisBroker.features.persistent
    assert not RedisBroker.features.release_counts_attempt


@pytest.mark.parametrize(("scheme", "first_byte"), [("rediss", 0x16), ("redis", ord("*"))])
async def test_rediss_speaks_tls_and_redis_does_not(scheme: str, first_byte: int) -> None:
    """A listener that records the first byte a client sends: 0x16 opens a TLS
    handshake, ``*`` a plain RESP command."""
    seen: list[int] = []

    async def first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.extend(await reader.read(1))
        writer.close()

    server = await asyncio.start_server(first, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(Exception, match="connecting"):
            await redis_broker(f"{scheme}://127.0.0.1:{port}/0").connect()
    finally:
        server.close()
        await server.wait_closed()
    assert seen and set(seen) == {first_byte}


async def test_features_follow_the_servers_persistence(broker: RedisBroker) -> None:
    assert broker.features.persistent is False, "the shared server keeps nothing on disk"


# -- routing ------------------------------------------------------------------------


async def test_fan_out_by_pattern_and_nothing_stays_after_acks(broker: RedisBroker) -> None:
    exact = Subscription("billing", "demo.tick")
    wild = Subscription("audit", "all", ("demo.#",))
    other = Subscription("mail", "other", ("demo.tock",))
    for sub in (exact, wild, other):
        await broker.declare(sub)
    await broker.publish([tick(1), tick(2)])
    for sub in (exact, wild):
        got = await take(broker, sub, 2)
        assert [number(d) for d in got] == [1, 2]
        assert all(d.attempt == 1 and d.message.type == "demo.tick" for d in got)
        for d in got:
            await d.ack()
    found = await broker.inspect_queues()
    assert [s.queue for s in found] == ["audit.all", "billing.demo.tick", "mail.other"]
    assert [(s.depth, s.in_flight) for s in found] == [(0, 0)] * 3


async def test_publish_after_declare_elsewhere_reaches_the_queue(namespace: str) -> None:
    async with (
        redis_broker(shared_url(namespace)) as publisher,
        redis_broker(shared_url(namespace)) as consumer,
    ):
        await publisher.publish([tick(0)])  # caches the (empty) bindings
        sub = Subscription("late", "demo.tick")
        await consumer.declare(sub)
        await publisher.publish([tick(1)])
        (delivery,) = await take(consumer, sub, 1)
        assert number(delivery) == 1
        await delivery.ack()


async def test_message_attributes_round_trip(broker: RedisBroker) -> None:
    sub = Subscription("rt", "demo.tick")
    await broker.declare(sub)
    sent = Message(
        type="demo.tick", body=b"\x00\xffbinary", subject="k1", headers={"x-trace": "t1"}
    )
    await broker.publish([sent])
    (delivery,) = await take(broker, sub, 1)
    assert delivery.message == sent and delivery.error is None
    await delivery.ack()


async def test_an_entry_from_another_program_decodes_with_its_entry_id(
    broker: RedisBroker,
) -> None:
    """The documented entry format, written by a program that knows nothing of Herald
    and sets no id: the stream entry id is the message id, on every redelivery."""
    sub = Subscription("foreign", "demo.tick")
    await broker.declare(sub)
    fields = {"cloudEvents_type": "demo.tick", "x-origin": "ruby", "body": b'{"n": 5}'}
    async with raw_client() as client:
        entry_id = (await client.xadd(broker.keys.queue(sub.queue), fields)).decode()
    (first,) = await take(broker, sub, 1)
    assert (first.message.id, first.message.headers["x-origin"], number(first)) == (
        entry_id,
        "ruby",
        5,
    )
    await first.retry(0, {"herald-last-error": "boom"})
    (second,) = await take(broker, sub, 1)
    assert (second.message.id, second.attempt) == (entry_id, 2)
    await second.ack()


async def test_oversized_publish_is_refused(broker: RedisBroker) -> None:
    with pytest.raises(MessageTooLargeError):
        await broker.publish([Message(type="demo.tick", body=b"x" * (64 * 1024 * 1024 + 1))])


async def test_a_burst_of_concurrent_publishes_waits_for_connections(
    broker: RedisBroker,
) -> None:
    sub = Subscription("burst", "demo.tick")
    await broker.declare(sub)
    await asyncio.gather(*(broker.publish([tick(n)]) for n in range(1500)))
    deliveries = await take(broker, sub, 1500)
    assert len({d.message.id for d in deliveries}) == 1500
    for delivery in deliveries:
        await delivery.ack()
    assert counts(await stats(broker, sub.queue)) == {"depth": 0, "in_flight": 0, "consumers": 0}


# -- settlement -----------------------------------------------------------------------


async def test_delayed_retry_carries_headers_and_attempt(broker: RedisBroker) -> None:
    sub = Subscription("retry", "demo.tick")
    await broker.declare(sub)
    await broker.publish([tick(7, keep="me")])
    stream = broker.consume(sub, Prefetch(4))
    first = await anext(stream)
    await first.retry(0.5, {"herald-last-error": "boom", "keep": "changed"})
    assert counts(await stats(broker, sub.queue)) == {"depth": 1, "in_flight": 0, "consumers": 1}
    await broker.publish([tick(8)])
    later = await anext(stream)
    assert number(later) == 8, "a message published after the retry overtakes it"
    await later.ack()
    second = await anext(stream)
    assert second.attempt == 2 and second.message.id == first.message.id
    assert second.message.headers["herald-last-error"] == "boom"
    assert second.message.headers["keep"] == "changed"
    assert "herald-attempt" not in second.message.headers
    await second.retry(0.0, {})
    third = await anext(stream)
    assert third.attempt == 3
    await third.ack()
    await stream.aclose()
    assert counts(await stats(broker, sub.queue)) == {"depth": 0, "in_flight": 0, "consumers": 0}


async def test_release_redelivers_at_once_without_counting(broker: RedisBroker) -> None:
    sub = Subscription("release", "demo.tick")
    await broker.declare(sub)
    await broker.publish([tick(1)])
    stream = broker.consume(sub, Prefetch(1))
    first = await anext(stream)
    await first.release()
    again = await anext(stream)
    assert again.message.id == first.message.id and again.attempt == 1
    await again.release()
    await stream.aclose()
    found = await stats(broker, sub.queue)
    assert (found.depth, found.in_flight) == (1, 0), "released: waiting, not in flight"
    (last,) = await take(broker, sub, 1)
    assert last.attempt == 1
    await last.ack()


async def test_settling_twice_is_refused_before_redis(broker: RedisBroker) -> None:
    sub = Subscription("twice", "demo.tick")
    await broker.declare(sub)
    await broker.publish([tick(1)])
    (delivery,) = await take(broker, sub, 1)
    await delivery.ack()
    with pytest.raises(Exception, match="already settled"):
        await delivery.retry(0, {})


# -- closing ------------------------------------------------------------------------------


async def test_closing_the_broker_ends_its_consumers(namespace: str) -> None:
    """Consumers iterated in tasks of their own, never closed: one waiting for entries,
    one for room in its window, one standing by on an exclusive queue, and one left
    suspended after a delivery. ``close()`` returns; the waiting ones raise at once,
    the suspended one when next asked; none counts as a consumer any more."""
    url = shared_url(namespace, lease=30, block=1)
    empty, full, suspended = (Subscription("closing", name) for name in ("a.b", "c.d", "e.f"))
    locked = Subscription("closing", "g.h", exclusive=True)
    async with redis_broker(url) as other:
        for sub in (empty, full, suspended, locked):
            await other.declare(sub)
        await other.publish([Message(type=t, body=b"{}") for t in ("c.d", "c.d", "e.f")])
        holder = other.consume(locked, Prefetch(1))
        holding = asyncio.ensure_future(anext(holder))
        await until(other, locked.queue, consumers=1)

        broker = redis_broker(url)
        await broker.connect()
        got: list[Any] = []

        async def drain(sub: Subscription) -> None:
            async for delivery in broker.consume(sub, Prefetch(1)):
                got.append(delivery)

        tasks = [asyncio.create_task(drain(sub)) for sub in (empty, full, locked)]
        stream = broker.consume(suspended, Prefetch(1))
        await anext(stream)
        for sub in (empty, full, suspended, locked):
            await until(other, sub.queue, consumers=2 if sub is locked else 1)
        assert len(got) == 1, "the full window holds one"
        async with asyncio.timeout(20):  # a guard against hanging, not a bound
            await broker.close()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        assert [type(r) for r in results] == [BrokerError] * 3, results
        with pytest.raises(BrokerError, match="closed"):
            await anext(stream)
        for sub in (empty, full, suspended):
            assert (await stats(other, sub.queue)).consumers == 0
        assert (await stats(other, locked.queue)).consumers == 1
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)
        await holder.aclose()


# -- prefetch: messages and bytes --------------------------------------------------------


async def test_prefetch_bounds_what_redis_hands_out_by_count(broker: RedisBroker) -> None:
    sub = Subscription("count", "demo.tick")
    await broker.declare(sub)
    await broker.publish([tick(n) for n in range(10)])
    stream = broker.consume(sub, Prefetch(messages=3))
    held = [await anext(stream) for _ in range(3)]
    fourth = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.3)  # six blocking reads' worth: nothing may come
    assert not fourth.done()
    assert counts(await stats(broker, sub.queue)) == {"depth": 7, "in_flight": 3, "consumers": 1}
    await held[0].ack()
    assert number(await fourth) == 3
    for delivery in held[1:]:
        await delivery.ack()
    await stream.aclose()


async def test_a_consumer_reads_again_once_half_its_window_is_free(broker: RedisBroker) -> None:
    """Reads come in batches: one settled delivery of four frees a slot, but no read
    of a single entry follows; a second one does, for two."""
    sub = Subscription("refill", "demo.tick")
    await broker.declare(sub)
    await broker.publish([tick(n) for n in range(10)])
    stream = broker.consume(sub, Prefetch(messages=4))
    held = [await anext(stream) for _ in range(4)]
    fifth = asyncio.ensure_future(anext(stream))
    await held[0].ack()
    await asyncio.sleep(0.3)
    assert not fifth.done(), "a quarter of the window free: nothing read yet"
    assert counts(await stats(broker, sub.queue)) == {"depth": 6, "in_flight": 3, "consumers": 1}
    await held[1].ack()
    assert number(await fifth) == 4
    assert counts(await stats(broker, sub.queue)) == {"depth": 4, "in_flight": 4, "consumers": 1}
    assert number(await anext(stream)) == 5
    await stream.aclose()


async def test_acks_settled_before_a_read_go_with_it(
    broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer's next read carries the acks its settled deliveries queued: no
    ack script call of their own, and they are acked and deleted all the same."""
    settler = broker._parts().settler
    sent: list[Any] = []
    ack_script = settler._ack

    async def counting(**kwargs: Any) -> Any:
        sent.append(kwargs)
        return await ack_script(**kwargs)

    monkeypatch.setattr(settler, "_ack", counting)
    sub = Subscription("carried", "demo.tick")
    await broker.declare(sub)
    await broker.publish([tick(n) for n in range(8)])
    stream = broker.consume(sub, Prefetch(messages=4))
    held = [await anext(stream) for _ in range(4)]
    fifth = asyncio.ensure_future(anext(stream))
    await asyncio.gather(held[0].ack(), held[1].ack())
    assert number(await fifth) == 4
    assert sent == [], "the acks went with the read"
    assert counts(await stats(broker, sub.queue)) == {"depth": 2, "in_flight": 4, "consumers": 1}
    await stream.aclose()


async def test_prefetch_bounds_what_redis_hands_out_by_bytes(broker: RedisBroker) -> None:
    sub = Subscription("bytes", "demo.tick")
    await broker.declare(sub)
    await broker.publish([tick(n, size=100) for n in range(10)])
    size = len(tick(0, size=100).body)
    stream = broker.consume(sub, Prefetch(messages=100, bytes=2 * size + 1))
    held = [await anext(stream) for _ in range(3)]  # room while under: 0, 1, 2 bodies
    fourth = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.3)
    assert not fourth.done()
    found = await stats(broker, sub.queue)
    assert (found.depth, found.in_flight) == (7, 3), "entries beyond the window stay in redis"
    await held[0].ack()
    await held[1].ack()
    assert number(await fourth) == 3
    fifth = await anext(stream)
    assert number(fifth) == 4
    for delivery in (held[2], fourth.result(), fifth):
        await delivery.ack()
    await stream.aclose()


async def test_a_waiting_consumer_takes_no_more_than_its_bytes_allow(
    broker: RedisBroker,
) -> None:
    """The consumer waits in a blocking read when a burst arrives; what it read
    beyond its byte bound goes back at once, and comes to it later, in order, as
    first attempts."""
    sub = Subscription("burst-bytes", "demo.tick")
    await broker.declare(sub)
    size = len(tick(0, size=100).body)
    stream = broker.consume(sub, Prefetch(messages=100, bytes=2 * size + 1))
    first = asyncio.ensure_future(anext(stream))
    await until(broker, sub.queue, consumers=1)
    await asyncio.sleep(0.2)  # into its blocking read
    await broker.publish([tick(n, size=100) for n in range(10)])
    held = [await first, await anext(stream), await anext(stream)]
    found = await stats(broker, sub.queue)
    assert (found.depth, found.in_flight) == (7, 3)
    rest = []
    for delivery in held:
        await delivery.ack()
        rest.append(await anext(stream))
    assert [number(d) for d in held + rest] == list(range(6))
    assert all(d.attempt == 1 for d in held + rest)
    for delivery in rest:
        await delivery.ack()
    await stream.aclose()


async def test_a_body_larger_than_the_byte_bound_flows_alone(broker: RedisBroker) -> None:
    sub = Subscription("big", "demo.tick")
    await broker.declare(sub)
    await broker.publish([tick(n, size=1000) for n in range(3)])
    stream = broker.consume(sub, Prefetch(messages=10, bytes=10))
    for n in range(3):
        delivery = await anext(stream)
        assert number(delivery) == n
        found = await stats(broker, sub.queue)
        assert (found.depth, found.in_flight) == (2 - n, 1)
        await delivery.ack()
    await stream.aclose()


# -- what arrives is input -------------------------------------------------------------------

GOOD = {"cloudEvents_type": "demo.tick", "body": b'{"n": 1}'}
GARBAGE: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("no type", {"body": b"{}", "foo": b"bar"}, DecodeError, "no CloudEvents type"),
    ("no fields but one", {"x": b"1"}, DecodeError, "no CloudEvents type"),
    ("bad type", {**GOOD, "cloudEvents_type": b"demo.*"}, DecodeError, "not an event type"),
    ("not utf-8", {**GOOD, "x-bin": b"\xff\xfe"}, DecodeError, "not UTF-8"),
    ("bad time", {**GOOD, "cloudEvents_time": b"yesterday"}, DecodeError, "attributes"),
    ("negative attempt", {**GOOD, "herald-attempt": b"-5"}, HeaderError, "herald-attempt"),
    ("word attempt", {**GOOD, "herald-attempt": b"three"}, HeaderError, "herald-attempt"),
    ("huge attempt", {**GOOD, "herald-attempt": b"9" * 40}, HeaderError, "herald-attempt"),
]


@pytest.mark.parametrize(
    ("fields", "error", "text"),
    [pytest.param(f, e, t, id=name) for name, f, e, t in GARBAGE],
)
async def test_an_undecodable_entry_is_a_delivery_with_its_error(
    broker: RedisBroker, fields: dict[str, Any], error: type[Exception], text: str
) -> None:
    sub = Subscription("raw", "demo.tick")
    await broker.declare(sub)
    async with raw_client() as client:
        entry_id = (await client.xadd(broker.keys.queue(sub.queue), fields)).decode()
    await broker.publish([tick(2)])
    bad, good = await take(broker, sub, 2)
    assert isinstance(bad.error, error) and text in str(bad.error)
    assert bad.attempt == 1 and bad.message.type in ("demo.tick", "herald.undecodable")
    assert bad.message.id == entry_id
    assert good.error is None and number(good) == 2
    reason = DeadLetterReason(sub.queue, type(bad.error).__name__, str(bad.error), bad.attempt)
    await bad.dead_letter(reason)
    await good.ack()
    (letter,) = await broker.dead_letters("raw")
    assert letter.message.id == entry_id and letter.reason.error_type == error.__name__
    assert counts(await stats(broker, sub.queue)) == {"depth": 0, "in_flight": 0, "consumers": 0}


async def test_the_runtime_dead_letters_garbage_and_the_consumer_keeps_going(
    namespace: str,
) -> None:
    seen: Recorder[int] = Recorder()
    service = Service(f"garbage-{uuid.uuid4().hex[:6]}")

    @service.on("demo.tick")
    async def record(message: Message, ctx: Context) -> None:
        seen.add(json.loads(message.body)["n"])

    async with connect(shared_url(namespace, lease=0.5, block=0.05)) as bus:
        broker = bus.broker
        assert isinstance(broker, RedisBroker)
        worker = await bus.start(service)
        queue = service.handlers[0].subscription.queue
        async with raw_client() as client:
            for _, fields, _, _ in GARBAGE:
                await client.xadd(broker.keys.queue(queue), fields)
        await bus.publish(Message(type="demo.tick", body=b'{"n": 42}'))
        await seen.wait_for(1)
        letters = await _wait_letters(broker, service.name, len(GARBAGE))
        assert sorted(dl.reason.error_type for dl in letters) == sorted(
            e.__name__ for _, _, e, _ in GARBAGE
        )
        assert all(dl.reason.attempts == 1 for dl in letters)
        assert seen.items == [42]
        assert counts(await stats(broker, queue)) == {"depth": 0, "in_flight": 0, "consumers": 1}
        await worker.stop()
    kept = next(dl for dl in letters if dl.message.headers.get("foo") == "bar")
    assert kept.message.type == "herald.undecodable", "the raw fields are kept"


async def _wait_letters(broker: RedisBroker, service: str, count: int) -> list[Any]:
    for _ in range(400):
        letters = await broker.dead_letters(service)
        if len(letters) >= count:
            await asyncio.sleep(0.2)
            again = await broker.dead_letters(service)
            assert len(again) == count, "each entry is dead-lettered once"
            return again
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(letters)} of {count} dead letters")


@pytest.mark.parametrize("namespace", ["", "ns", "a{b", "x}y"])
def test_a_services_keys_share_one_hash_slot(namespace: str) -> None:
    """Every script that settles, claims, renews, retries, dead-letters, inspects or
    takes an exclusive queue's lock touches keys of one service only; those keys hash
    to one Cluster slot."""
    keys = RedisBroker(RedisSettings(namespace=namespace)).keys
    for service, queue in (("payroll", "payroll.employee.created"), ("hr", "hr.a.b.c")):
        slots = {
            key_slot(key.encode())
            for key in (
                keys.queue(queue),
                keys.delayed(queue),
                keys.consumers(queue),
                keys.lock(queue),
                keys.handoff(queue),
                keys.dead_letters(service),
            )
        }
        assert len(slots) == 1, (namespace, queue)
