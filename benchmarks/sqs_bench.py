"""Amazon SQS suite: Herald ``sqs://`` against raw aiobotocore, both through SNS.

* ``aiobotocore`` (baseline): the same AWS shape Herald uses, by hand: one SNS topic
  with one SQS queue subscribed (raw message delivery); a throughput window is
  ``PublishBatch`` calls of ten, at most eight at once; a paced latency event is one
  ``Publish``; the consumer runs four loops of ``ReceiveMessage`` (ten, long poll 1 s)
  each followed by one ``DeleteMessageBatch``.
* ``aiobotocore-attrs``: the same, each message with the eight message attributes
  Herald sends (CloudEvents attributes, word count) and the subscription with a filter
  policy on the type, as Herald's: what those cost moto, apart from the client.
* ``herald``: see :mod:`benchmarks.herald_contender` (standard queues, ``wait=1``).

Both run against moto (``BENCH_SQS_ENDPOINT``, else a moto server this suite starts on
a loopback port with the tests' launcher), which costs milliseconds per call and
does the work of SQS and SNS in one Python process: the figures compare the two
clients on it, not what AWS would give. Events are capped at :data:`CAP` a run.
Targets: throughput >= 0.8 x aiobotocore; p99 <= aiobotocore + 50 ms.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from .harness import LATENCY, THROUGHPUT, Contender, Publisher, Recorder, make_body, parse_body
from .herald_contender import HeraldContender
from .report import faster_than, p99_within
from .suite import Suite

__all__ = ["SUITE", "AiobotocoreAttributes", "AiobotocoreContender", "HeraldSQS", "endpoint"]

CAP = 3000
LAUNCHER = Path(__file__).resolve().parents[1] / "tests" / "brokers" / "sqs" / "launch_moto.py"


def endpoint() -> str:
    """``BENCH_SQS_ENDPOINT``, else a moto server started now (children inherit it)."""
    endpoint = os.environ.get("BENCH_SQS_ENDPOINT")
    if endpoint:
        return endpoint
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, str(LAUNCHER), "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    atexit.register(server.terminate)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("moto did not start") from None
            time.sleep(0.05)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["BENCH_SQS_ENDPOINT"] = endpoint
    return endpoint


def _client_options() -> dict[str, Any]:
    return {
        "region_name": "us-east-1",
        "endpoint_url": endpoint(),
        "aws_access_key_id": "bench",
        "aws_secret_access_key": "bench",
        "config": AioConfig(max_pool_connections=64),
    }


class HeraldSQS(HeraldContender):
    max_events = CAP

    def url(self) -> str:
        return (
            f"sqs://bench:bench@us-east-1?endpoint={endpoint()}&namespace=bench{self.run_id}&wait=1"
        )


def _attributes(seq: int) -> dict[str, Any]:
    """Eight attributes shaped like Herald's (for ``aiobotocore-attrs``)."""
    values = {
        "cloudEvents_specversion": "1.0",
        "cloudEvents_id": f"{seq:032x}",
        "cloudEvents_source": "bench",
        "cloudEvents_type": "bench.event",
        "cloudEvents_time": "2026-01-01T00:00:00+00:00",
        "cloudEvents_datacontenttype": "application/json",
    }
    attributes = {k: {"DataType": "String", "StringValue": v} for k, v in values.items()}
    attributes["herald-words"] = {"DataType": "Number", "StringValue": "2"}
    return attributes


class _SNSPublisher:
    def __init__(self, sns: Any, topic: str, attributes: bool) -> None:
        self._sns = sns
        self._topic = topic
        self._attributes = attributes
        self._slots = asyncio.Semaphore(8)

    async def publish(self, events: Sequence[tuple[int, int]]) -> None:
        if len(events) == 1:
            seq, sent_ns = events[0]
            extra = {"MessageAttributes": _attributes(seq)} if self._attributes else {}
            await self._sns.publish(
                TopicArn=self._topic, Message=make_body(seq, sent_ns).decode(), **extra
            )
            return
        await asyncio.gather(
            *(self._batch(events[start : start + 10]) for start in range(0, len(events), 10))
        )

    async def _batch(self, events: Sequence[tuple[int, int]]) -> None:
        entries: list[dict[str, Any]] = [
            {"Id": str(n), "Message": make_body(seq, sent_ns).decode()}
            for n, (seq, sent_ns) in enumerate(events)
        ]
        if self._attributes:
            for entry, (seq, _) in zip(entries, events, strict=True):
                entry["MessageAttributes"] = _attributes(seq)
        async with self._slots:
            await self._sns.publish_batch(TopicArn=self._topic, PublishBatchRequestEntries=entries)


class AiobotocoreContender(Contender):
    name = "aiobotocore"
    max_events = CAP
    attributes = False

    @property
    def _names(self) -> tuple[str, str]:
        return f"bench{self.run_id}-raw-topic", f"bench{self.run_id}-raw-queue"

    @asynccontextmanager
    async def _clients(self) -> AsyncIterator[tuple[Any, Any]]:
        session = get_session()
        async with (
            session.create_client("sqs", **_client_options()) as sqs,
            session.create_client("sns", **_client_options()) as sns,
        ):
            yield sqs, sns

    async def _declare(self, sqs: Any, sns: Any) -> tuple[str, str]:
        topic_name, queue_name = self._names
        topic = (await sns.create_topic(Name=topic_name))["TopicArn"]
        url = (await sqs.create_queue(QueueName=queue_name))["QueueUrl"]
        arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        attributes = {"RawMessageDelivery": "true"}
        if self.attributes:
            attributes["FilterPolicy"] = '{"cloudEvents_type": ["bench.event"]}'
        await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes=attributes)
        return topic, url

    async def check(self) -> None:
        async with self._clients() as (sqs, _):
            await sqs.list_queues()

    def publisher(self) -> AbstractAsyncContextManager[Publisher]:
        return self._publisher()

    @asynccontextmanager
    async def _publisher(self) -> AsyncIterator[Publisher]:
        async with self._clients() as (sqs, sns):
            topic, _ = await self._declare(sqs, sns)
            yield _SNSPublisher(sns, topic, self.attributes)

    async def consume(self, recorder: Recorder, ready: Callable[[], None]) -> None:
        async with self._clients() as (sqs, sns):
            _, url = await self._declare(sqs, sns)
            ready()

            async def loop() -> None:
                while not recorder.complete:
                    reply = await sqs.receive_message(
                        QueueUrl=url,
                        MaxNumberOfMessages=10,
                        WaitTimeSeconds=1,
                        MessageAttributeNames=["All"] if self.attributes else [],
                    )
                    received = reply.get("Messages") or []
                    for message in received:
                        recorder.handled(*parse_body(message["Body"].encode()))
                    if received:
                        entries = [
                            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                            for n, m in enumerate(received)
                        ]
                        await sqs.delete_message_batch(QueueUrl=url, Entries=entries)

            await asyncio.gather(*(loop() for _ in range(4)))

    async def cleanup(self) -> None:
        async with self._clients() as (sqs, sns):
            topic, url = await self._declare(sqs, sns)
            await sns.delete_topic(TopicArn=topic)
            await sqs.delete_queue(QueueUrl=url)


class AiobotocoreAttributes(AiobotocoreContender):
    name = "aiobotocore-attrs"
    attributes = True

    @property
    def _names(self) -> tuple[str, str]:
        return f"bench{self.run_id}-attrs-topic", f"bench{self.run_id}-attrs-queue"


SUITE = Suite(
    "sqs",
    (AiobotocoreContender, AiobotocoreAttributes, HeraldSQS),
    baseline="aiobotocore",
    targets={
        ("herald", THROUGHPUT): [faster_than("aiobotocore", 0.8)],
        ("herald", LATENCY): [p99_within("aiobotocore", 50.0)],
    },
)
