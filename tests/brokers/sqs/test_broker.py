"""The SQS adapter's own behaviour on moto: routing by filter policy, batching, the
visibility timeout, dead letters, what arrives from other senders, inspection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from herald.broker import Delivery, Prefetch, Subscription
from herald.brokers.sqs import SQSBroker
from herald.capabilities import QueueStats
from herald.deadletter import DeadLetterReason
from herald.errors import DecodeError, MessageTooLargeError
from herald.message import Message
from herald.testing import eventually

from .conftest import sqs_broker
from .server import sqs_url

pytestmark = pytest.mark.sqs


class Taker:
    """Pulls deliveries into a list, settling nothing."""

    def __init__(self, broker: SQSBroker, subscription: Subscription, prefetch: int = 50) -> None:
        self.items: list[Delivery] = []
        self._task = asyncio.create_task(self._pull(broker, subscription, Prefetch(prefetch)))

    async def _pull(
        self, broker: SQSBroker, subscription: Subscription, prefetch: Prefetch
    ) -> None:
        async for delivery in broker.consume(subscription, prefetch):
            self.items.append(delivery)

    async def count(self, n: int, timeout: float = 20.0) -> list[Delivery]:
        await eventually(lambda: len(self.items) >= n, timeout, f"{n} deliveries")
        return self.items

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def spy(client: Any, method: str) -> list[dict[str, Any]]:
    """Record the keyword arguments of every call of ``client.method``."""
    calls: list[dict[str, Any]] = []
    original = getattr(client, method)

    async def recorded(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return await original(**kwargs)

    setattr(client, method, recorded)
    return calls


async def test_patterns_route_exactly_and_strays_of_wide_filters_are_dropped(
    broker: SQSBroker,
) -> None:
    subs = {
        "star": Subscription("route", "star", ("employee.*",)),
        "hash": Subscription("route", "hash", ("employee.#",)),
        "tail": Subscription("route", "tail", ("#.deleted",)),
        "middle": Subscription("route", "middle", ("a.*.c",)),
    }
    for sub in subs.values():
        await broker.declare(sub)
    types = ["employee", "employee.created", "employee.x.deleted", "a.b.c", "a.b.d", "a.c"]
    await broker.publish([Message(type=t, body=b"{}") for t in types])
    expected = {
        "star": {"employee.created"},
        "hash": {"employee", "employee.created", "employee.x.deleted"},
        "tail": {"employee.x.deleted"},
        "middle": {"a.b.c"},
    }
    for name, sub in subs.items():
        taker = Taker(broker, sub)
        await taker.count(len(expected[name]))
        await asyncio.sleep(0.5)
        assert {d.message.type for d in taker.items} == expected[name], name
        for delivery in taker.items:
            await delivery.ack()
        await taker.close()
    (middle,) = await broker.inspect_queues(["route.middle"])
    assert middle.depth == 0 and middle.in_flight == 0, "the stray a.b.d was deleted"


async def test_declarations_add_patterns(url: str, broker: SQSBroker) -> None:
    await broker.declare(Subscription("merge", "q", ("a.one",)))
    async with sqs_broker(url) as other:
        await other.declare(Subscription("merge", "q", ("a.two",)))
    await broker.publish([Message(type="a.one", body=b"1"), Message(type="a.two", body=b"2")])
    taker = Taker(broker, Subscription("merge", "q", ("a.one",)))
    got = await taker.count(2)
    assert sorted(d.message.type for d in got) == ["a.one", "a.two"]
    await taker.close()


async def test_every_call_is_batched_ten_at_a_time(namespace: str) -> None:
    async with sqs_broker(sqs_url(namespace, fifo="false")) as broker:
        await _batched(broker)


async def _batched(broker: SQSBroker) -> None:
    clients = broker._parts().clients
    publishes = spy(clients.sns, "publish_batch")
    deletes = spy(clients.sqs, "delete_message_batch")
    receives = spy(clients.sqs, "receive_message")
    sub = Subscription("batched", "item")
    await broker.declare(sub)
    await broker.publish(
        [Message(type="item", body=b"%d" % n, subject=f"k{n % 3}") for n in range(25)]
    )
    assert [len(c["PublishBatchRequestEntries"]) for c in publishes] and all(
        len(c["PublishBatchRequestEntries"]) <= 10 for c in publishes
    )
    assert len(publishes) <= 3 + 2, "25 messages in three keys' lanes"
    taker = Taker(broker, sub, prefetch=30)
    got = await taker.count(25)
    await asyncio.gather(*(d.ack() for d in got))
    assert sum(len(c["Entries"]) for c in deletes) == 25
    assert all(len(c["Entries"]) <= 10 for c in deletes) and len(deletes) <= 5
    assert all(c["MaxNumberOfMessages"] <= 10 for c in receives)
    await taker.close()


async def test_a_held_message_stays_invisible_past_its_visibility(namespace: str) -> None:
    url = sqs_url(namespace, visibility=2)
    sub = Subscription("held", "item")
    async with sqs_broker(url) as first, sqs_broker(url) as second:
        await first.declare(sub)
        await first.publish([Message(type="item", body=b"{}")])
        holder = Taker(first, sub)
        (held,) = await holder.count(1)
        other = Taker(second, sub)
        await asyncio.sleep(5)  # two and a half visibility timeouts
        assert other.items == [], "the held message was not redelivered"
        (stats,) = await first.inspect_queues([sub.queue])
        assert (stats.depth, stats.in_flight, stats.consumers) == (0, 1, 2)
        await held.ack()
        await holder.close()
        await other.close()


async def test_a_retry_waits_whole_seconds_and_counts_an_attempt(broker: SQSBroker) -> None:
    sub = Subscription("delay", "item")
    await broker.declare(sub)
    await broker.publish([Message(type="item", body=b"{}")])
    taker = Taker(broker, sub)
    (first,) = await taker.count(1)
    started = time.monotonic()
    await first.retry(1.2, {"x-ignored": "1"})
    second = (await taker.count(2))[1]
    assert time.monotonic() - started >= 2.0 - 0.05, "1.2 s rounds up to 2 s"
    assert second.attempt == 2 and "x-ignored" not in second.message.headers
    await second.ack()
    await taker.close()


async def test_dead_letters_keep_reason_and_retention(
    broker: SQSBroker, raw_sqs: Any, namespace: str
) -> None:
    sub = Subscription("dead", "item")
    await broker.declare(sub)
    await broker.publish([Message(type="item", body=b"{}", subject="k")])
    taker = Taker(broker, sub)
    (delivery,) = await taker.count(1)
    reason = DeadLetterReason(sub.queue, "ValueError", "no " * 300, 3)
    await delivery.dead_letter(reason)
    await taker.close()
    (letter,) = await broker.dead_letters("dead")
    assert letter.reason.error_message == reason.error_message and letter.reason.attempts == 3
    assert letter.message.subject == "k"
    dlq = broker._parts().topology.names.dead_letters("dead")
    queue_url = (await raw_sqs.get_queue_url(QueueName=dlq))["QueueUrl"]
    attributes = await raw_sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["MessageRetentionPeriod"]
    )
    assert attributes["Attributes"]["MessageRetentionPeriod"] == "1209600"
    assert await broker.purge_dead_letters("dead") == 1


async def test_what_other_senders_put_in_a_queue_is_input(broker: SQSBroker, raw_sqs: Any) -> None:
    sub = Subscription("foreign", "item")
    await broker.declare(sub)
    name = broker._parts().topology.names.queue(sub.queue)
    queue_url = (await raw_sqs.get_queue_url(QueueName=name))["QueueUrl"]
    garbage = {"herald-headers": {"DataType": "String", "StringValue": "not json"}}
    plain = {"cloudEvents_type": {"DataType": "String", "StringValue": "item"}}
    for n, attributes in enumerate((garbage, plain)):
        await raw_sqs.send_message(
            QueueUrl=queue_url,
            MessageBody="{}",
            MessageAttributes=attributes,
            MessageGroupId="g",
            MessageDeduplicationId=f"d{n}",
        )
    taker = Taker(broker, sub)
    bad, good = await taker.count(2)
    assert isinstance(bad.error, DecodeError) and bad.message.type == "herald.undecodable"
    assert good.error is None and good.message.type == "item" and good.message.id
    for delivery in (bad, good):
        await delivery.ack()
    await taker.close()


async def test_attributes_count_against_the_size_limit(broker: SQSBroker) -> None:
    body = b"x" * (broker.features.max_message_bytes - 10)
    with pytest.raises(MessageTooLargeError) as caught:
        await broker.publish([Message(type="item", body=body, headers={"x": "y" * 8000})])
    assert caught.value.limit == 262_144 and caught.value.size > 262_144


async def test_oldest_age_comes_from_cloudwatch_when_it_has_a_datapoint(
    broker: SQSBroker, endpoint: str
) -> None:
    sub = Subscription("aged", "item")
    await broker.declare(sub)
    await broker.publish([Message(type="item", body=b"{}")])
    stats = await until(broker, sub.queue, lambda s: s.depth == 1)
    assert stats.oldest_age is None, "moto publishes no SQS metrics"
    name = broker._parts().topology.names.queue(sub.queue)
    await broker._parts().clients.cloudwatch.put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": name}],
                "Value": 42.0,
            }
        ],
    )
    stats = await until(broker, sub.queue, lambda s: s.oldest_age is not None)
    assert stats.oldest_age == 42.0


async def until(broker: SQSBroker, queue: str, check: Callable[[QueueStats], bool]) -> QueueStats:
    async def read() -> QueueStats:
        (found,) = await broker.inspect_queues([queue])
        return found

    deadline = time.monotonic() + 20
    while not check(stats := await read()):
        assert time.monotonic() < deadline, f"never: {stats}"
        await asyncio.sleep(0.1)
    return stats


async def test_a_message_at_the_limit_is_dead_lettered_with_its_reason(broker: SQSBroker) -> None:
    sub = Subscription("big", "item")
    await broker.declare(sub)
    body = b"x" * broker.features.max_message_bytes
    await broker.publish([Message(type="item", body=body)])
    taker = Taker(broker, sub)
    (delivery,) = await taker.count(1)
    assert delivery.size == len(body)
    await delivery.dead_letter(DeadLetterReason(sub.queue, "Big", "e" * 4000, 1))
    await taker.close()
    (letter,) = await broker.dead_letters("big")
    assert letter.message.body == body and letter.reason.error_message == "e" * 4000
