"""The broker contract driven directly, without the runtime: settle exactly once,
releases counted as the features say, the prefetch bounds, retry delays, and the
queue inspection counts."""

from __future__ import annotations

import asyncio
import time

from ...broker import Broker, Delivery, Prefetch, Subscription
from ...capabilities import DeadLetterAdmin, QueueInspection, QueueStats
from ...deadletter import DeadLetterReason
from ...errors import SettleError
from ...message import Message
from ..environment import Environment
from ..recorder import eventually, until

__all__ = [
    "contract_exclusive_consumers_take_turns",
    "contract_prefetch_bounds_messages_and_bytes",
    "contract_queue_inspection_counts",
    "contract_release_counts_as_features_say",
    "contract_retry_delay_is_honoured",
    "contract_settle_exactly_once",
]


class _Taker:
    """Pulls deliveries from one consumer into a list, settling nothing."""

    def __init__(self, broker: Broker, subscription: Subscription, prefetch: Prefetch) -> None:
        self.items: list[Delivery] = []
        self._task = asyncio.create_task(self._pull(broker, subscription, prefetch))

    async def _pull(self, broker: Broker, subscription: Subscription, prefetch: Prefetch) -> None:
        async for delivery in broker.consume(subscription, prefetch):
            self.items.append(delivery)

    async def count(self, n: int, timeout: float = 20.0) -> list[Delivery]:
        await eventually(lambda: len(self.items) >= n or self._task.done(), timeout, f"{n} taken")
        if self._task.done():
            self._task.result()
        return self.items[:n]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def _subscription(env: Environment, base: str) -> Subscription:
    return Subscription(env.service_name(base), "contract.item", ("contract.item",))


def _items(n: int, size: int = 16) -> list[Message]:
    return [Message(type="contract.item", body=f"{i:0{size}d}".encode()) for i in range(n)]


async def contract_settle_exactly_once(env: Environment) -> None:
    sub = _subscription(env, "settle")
    reason = DeadLetterReason(sub.queue, "Test", "dead-lettered by the contract test", 1)
    async with env.broker() as broker:
        await broker.declare(sub)
        sent = _items(4)
        await broker.publish(sent)
        taker = _Taker(broker, sub, Prefetch(10))
        by_id = {d.message.id: d for d in await taker.count(4)}
        acked, dead, released, retried = (by_id[m.id] for m in sent)
        await acked.ack()
        await dead.dead_letter(reason)
        await released.release()
        await retried.retry(0.0, {})
        settled = (
            (acked, "ack"), (dead, "dead_letter"), (released, "release"), (retried, "retry")
        )  # fmt: skip
        for delivery, how in settled:
            assert delivery.settlement == how
            for again in (
                delivery.ack(),
                delivery.release(),
                delivery.retry(0.0, {}),
                delivery.dead_letter(reason),
            ):
                try:
                    await again
                except SettleError as exc:
                    assert how.replace("_", "-") in str(exc).replace("_", "-")
                else:
                    raise AssertionError(f"a delivery settled by {how} was settled again")
        back = await taker.count(6)
        redelivered = sorted(d.message.id for d in back[4:])
        assert redelivered == sorted((released.message.id, retried.message.id)), redelivered
        await asyncio.sleep(0.5)
        assert len(taker.items) == 6, "acked and dead-lettered messages do not come back"
        for delivery in back[4:]:
            await delivery.ack()
        await taker.close()
        if isinstance(broker, DeadLetterAdmin):
            letters = await broker.dead_letters(sub.service)
            assert [dl.message.id for dl in letters] == [dead.message.id]
            assert letters[0].reason.error_message == reason.error_message


async def contract_release_counts_as_features_say(env: Environment) -> None:
    sub = _subscription(env, "release")
    features = await env.features()
    async with env.broker() as broker:
        await broker.declare(sub)
        await broker.publish(_items(1))
        taker = _Taker(broker, sub, Prefetch(1))
        (first,) = await taker.count(1)
        assert first.attempt == 1
        await first.release()
        second = (await taker.count(2))[1]
        await second.ack()
        await taker.close()
    assert second.message.id == first.message.id
    expected = 2 if features.release_counts_attempt else 1
    assert second.attempt == expected, f"attempt after a release: {second.attempt}"


async def contract_prefetch_bounds_messages_and_bytes(env: Environment) -> None:
    """At most ``messages`` unsettled, and at most ``bytes`` of body (one larger body
    alone); the count bound is used to the full, and every message gets through."""
    size = 64 * 1024
    for base, prefetch, body, fills in (
        ("prefetch-count", Prefetch(messages=3), 16, True),
        ("prefetch-bytes", Prefetch(messages=100, bytes=3 * size), size, False),
    ):
        sub = _subscription(env, base)
        async with env.broker() as broker:
            await broker.declare(sub)
            await broker.publish(_items(10, body))
            taker = _Taker(broker, sub, prefetch)
            await taker.count(3 if fills else 1)
            settled = 0
            while settled < 10:
                await asyncio.sleep(0.3)
                held = taker.items[settled:]
                assert 1 <= len(held) <= 3, f"{base}: {len(held)} unsettled, the bound is 3"
                await held[0].ack()
                settled += 1
                if settled < 10:
                    await taker.count(settled + 1)
            await taker.close()


async def contract_retry_delay_is_honoured(env: Environment) -> None:
    sub = _subscription(env, "delay")
    features = await env.features()
    delay = 0.6
    async with env.broker() as broker:
        await broker.declare(sub)
        await broker.publish(_items(1))
        taker = _Taker(broker, sub, Prefetch(1))
        (first,) = await taker.count(1)
        started = time.monotonic()
        await first.retry(delay, {"x-contract-retry": "1"})
        second = (await taker.count(2))[1]
        waited = time.monotonic() - started
        await second.ack()
        await taker.close()
    assert waited >= delay - 0.05, f"redelivered after {waited:.3f}s, asked for {delay}s"
    assert second.message.id == first.message.id and second.attempt == 2
    if features.retry_headers:
        assert second.message.headers.get("x-contract-retry") == "1"


async def contract_queue_inspection_counts(env: Environment) -> None:
    """Depth, in flight and consumers follow each delivery and settlement exactly."""
    sub = _subscription(env, "inspect")
    async with env.broker() as broker:
        assert isinstance(broker, QueueInspection)
        await broker.declare(sub)
        await broker.publish(_items(5))

        async def stats() -> QueueStats:
            (found,) = await broker.inspect_queues([sub.queue, "no-such.queue"])
            return found

        idle = await until(stats, lambda s: s.depth == 5, what="5 waiting")
        assert idle.in_flight in (0, None) and idle.consumers in (0, None), idle
        assert idle.oldest_age is None or idle.oldest_age >= 0
        taker = _Taker(broker, sub, Prefetch(2))
        try:
            for taken, depth, in_flight in ((2, 3, 2), (4, 1, 2), (5, 0, 1)):
                held = (await taker.count(taken))[taken - in_flight :]

                def counted(s: QueueStats, d: int = depth, f: int = in_flight) -> bool:
                    return s.depth == d and s.in_flight in (f, None)

                busy = await until(
                    stats, counted, what=f"{depth} waiting and {in_flight} in flight"
                )
                assert busy.consumers in (1, None), busy
                for delivery in held:
                    await delivery.ack()
            await until(
                stats, lambda s: s.depth == 0 and s.in_flight in (0, None), what="all acked"
            )
        finally:
            await taker.close()
        await until(stats, lambda s: s.consumers in (0, None), what="the consumer gone")
        everything = {s.queue for s in await broker.inspect_queues()}
        assert sub.queue in everything


async def contract_exclusive_consumers_take_turns(env: Environment) -> None:
    """One consumer of an exclusive queue takes deliveries, the other stands by; once
    the first has stopped and settled what it held, the second takes the rest."""
    sub = Subscription(
        env.service_name("turns"), "contract.item", ("contract.item",), exclusive=True
    )
    async with env.broker() as broker:
        await broker.declare(sub)
        await broker.publish(_items(6))
        first = _Taker(broker, sub, Prefetch(2))
        held = await first.count(2)
        second = _Taker(broker, sub, Prefetch(10))
        try:
            await asyncio.sleep(1.0)
            assert second.items == [], "the standby consumer got deliveries"
            for delivery in held:
                await delivery.ack()
            await first.count(4)
            await asyncio.sleep(0.5)
            assert second.items == [], "the standby consumer got deliveries"
            await first.close()
            for delivery in first.items[2:4]:
                await delivery.ack()
            taken = await second.count(2, timeout=60)
            ids = {d.message.id for d in first.items} | {d.message.id for d in taken}
            assert len(ids) == 6, "the standby took over what the first left"
            for delivery in taken:
                await delivery.ack()
        finally:
            await first.close()
            await second.close()
