"""RabbitMQ suite: Herald ``amqp://`` against raw aio-pika and FastStream.

Every contender uses the same scheme, publisher and consumer in separate processes:
a durable topic exchange and a durable queue bound to ``bench.event``, persistent
~200-byte JSON messages published with publisher confirms, consumed with manual
acks after the handler ran, prefetch 64 (Herald's default for concurrency 16).

* ``aio-pika`` (baseline): a throughput window is a ``gather`` of ``exchange.publish``
  calls on a confirming channel (so confirms are pipelined); the consumer callback
  parses the JSON and acks.
* ``faststream``: ``RabbitBroker.publish`` of a pydantic model (gathered per window);
  a ``@broker.subscriber`` handler typed with the model (acked after it returns).
* ``herald``: see :mod:`benchmarks.herald_contender`.
* ``c-librabbitmq``: the C client doing the same durable work, see
  :mod:`benchmarks.amqp_c_contender` (needs gcc and librabbitmq-dev).

Targets (Herald): throughput >= aio-pika, >= 2x FastStream and >= 0.35x the C client;
p99 <= aio-pika + 1 ms.
Every name is prefixed ``bench<run id>`` and deleted afterwards.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aio_pika

from .amqp_c_contender import CClientContender
from .faststream_contender import BenchModel
from .harness import (
    LATENCY,
    THROUGHPUT,
    Contender,
    Publisher,
    Recorder,
    make_body,
    parse_body,
)
from .herald_contender import HeraldContender
from .report import faster_than, p99_within
from .suite import Suite

__all__ = ["SUITE", "AioPikaContender", "FastStreamContender", "HeraldAMQP"]

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PREFETCH = 64
ROUTING_KEY = "bench.event"


def _names(run_id: str, who: str) -> tuple[str, str]:
    prefix = f"bench{run_id}.{who}"
    return f"{prefix}.events", f"{prefix}.bench"


class HeraldAMQP(HeraldContender):
    def url(self) -> str:
        return f"{AMQP_URL}?namespace=bench{self.run_id}"


class _AioPikaPublisher:
    def __init__(self, exchange: Any) -> None:
        self._exchange = exchange

    async def publish(self, events: Sequence[tuple[int, int]]) -> None:
        await asyncio.gather(
            *(
                self._exchange.publish(
                    aio_pika.Message(
                        make_body(seq, sent_ns),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=ROUTING_KEY,
                )
                for seq, sent_ns in events
            )
        )


class AioPikaContender(Contender):
    name = "aio-pika"

    async def check(self) -> None:
        connection = await aio_pika.connect(AMQP_URL)
        await connection.close()

    async def _declare(self, channel: Any) -> tuple[Any, Any]:
        exchange_name, queue_name = _names(self.run_id, "raw")
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(exchange, ROUTING_KEY)
        return exchange, queue

    def publisher(self) -> AbstractAsyncContextManager[Publisher]:
        return self._publisher()

    @asynccontextmanager
    async def _publisher(self) -> AsyncIterator[Publisher]:
        async with await aio_pika.connect(AMQP_URL) as connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange, _ = await self._declare(channel)
            yield _AioPikaPublisher(exchange)

    async def consume(self, recorder: Recorder, ready: Callable[[], None]) -> None:
        async with await aio_pika.connect(AMQP_URL) as connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=PREFETCH)
            _, queue = await self._declare(channel)

            async def on_message(message: Any) -> None:
                recorder.handled(*parse_body(message.body))
                await message.ack()

            tag = await queue.consume(on_message)
            try:
                ready()
                await recorder.done.wait()
            finally:
                await queue.cancel(tag)

    async def cleanup(self) -> None:
        exchange_name, queue_name = _names(self.run_id, "raw")
        async with await aio_pika.connect(AMQP_URL) as connection:
            channel = await connection.channel()
            await channel.queue_delete(queue_name)
            await channel.exchange_delete(exchange_name)


def _faststream() -> Any:
    """faststream.rabbit, imported on first use: without it only FastStream is unavailable."""
    importlib.import_module("faststream.rabbit.schemas")
    return importlib.import_module("faststream.rabbit")


class _FastStreamPublisher:
    def __init__(self, broker: Any, exchange: Any) -> None:
        self._broker = broker
        self._exchange = exchange

    async def publish(self, events: Sequence[tuple[int, int]]) -> None:
        await asyncio.gather(
            *(
                self._broker.publish(
                    BenchModel(seq=seq, sent_ns=sent_ns),
                    exchange=self._exchange,
                    routing_key=ROUTING_KEY,
                    persist=True,
                )
                for seq, sent_ns in events
            )
        )


class FastStreamContender(Contender):
    name = "faststream"

    def _broker(self) -> Any:
        rabbit = _faststream()
        channel = rabbit.schemas.Channel(prefetch_count=PREFETCH)
        return rabbit.RabbitBroker(AMQP_URL, default_channel=channel, logger=None)

    def _exchange_and_queue(self) -> tuple[Any, Any]:
        exchange_name, queue_name = _names(self.run_id, "faststream")
        rabbit = _faststream()
        exchange = rabbit.RabbitExchange(
            exchange_name, type=rabbit.ExchangeType.TOPIC, durable=True
        )
        return exchange, rabbit.RabbitQueue(queue_name, durable=True, routing_key=ROUTING_KEY)

    async def check(self) -> None:
        broker = self._broker()
        await broker.connect()
        await broker.stop()

    def publisher(self) -> AbstractAsyncContextManager[Publisher]:
        return self._publisher()

    @asynccontextmanager
    async def _publisher(self) -> AsyncIterator[Publisher]:
        broker = self._broker()
        exchange, _ = self._exchange_and_queue()
        await broker.connect()
        try:
            await broker.declare_exchange(exchange)
            yield _FastStreamPublisher(broker, exchange)
        finally:
            await broker.stop()

    async def consume(self, recorder: Recorder, ready: Callable[[], None]) -> None:
        broker = self._broker()
        exchange, queue = self._exchange_and_queue()

        async def handle(body: BenchModel) -> None:
            recorder.handled(body.seq, body.sent_ns)

        broker.subscriber(queue, exchange)(handle)

        await broker.start()
        try:
            ready()
            await recorder.done.wait()
        finally:
            await broker.stop()

    async def cleanup(self) -> None:
        exchange_name, queue_name = _names(self.run_id, "faststream")
        async with await aio_pika.connect(AMQP_URL) as connection:
            channel = await connection.channel()
            await channel.queue_delete(queue_name)
            await channel.exchange_delete(exchange_name)


SUITE = Suite(
    "amqp",
    (CClientContender, AioPikaContender, FastStreamContender, HeraldAMQP),
    baseline="aio-pika",
    targets={
        ("herald", THROUGHPUT): [
            faster_than("aio-pika"),
            faster_than("faststream", 2.0),
            faster_than("c-librabbitmq", 0.35),
        ],
        ("herald", LATENCY): [p99_within("aio-pika", 1.0)],
    },
)
