"""Names on AWS, and the topic, queues and subscriptions a namespace declares.

One SNS topic per namespace, ``<ns>-herald-events`` (``.fifo`` with ``fifo=true``),
takes every publish. Each Herald queue ``<service>.<name>`` is an SQS queue
subscribed to it with raw message delivery and a filter policy built from the
queue's patterns (:mod:`.filters`), so fan-out, routing and "a queue keeps what is
published after it was declared" are all SNS's own. A service's dead letters are a
standard queue; an exclusive queue has a FIFO lock queue beside it
(:mod:`.exclusive`).

SQS names allow 80 letters, digits, ``-`` and ``_``: a name is the namespace, the
Herald name with other characters as ``_`` (cut to fit) and a hash of the exact
name, ``<ns>-payroll_employee_created-q1a2b3c4d5``. Each queue carries tags: its
Herald name and kind, one tag per pattern (the patterns of every declaration, so
two versions of a service declaring different patterns get their union), its
subscription's ARN, and its live consumers (:mod:`.presence`).

>>> names = Names("t1", fifo=False)
>>> names.queue("payroll.employee.created")
't1-payroll_employee_created-q209560f72c'
>>> names.topic, Names("", fifo=True).dead_letters("payroll")
('t1-herald-events', 'payroll_dlq-dfac3ca4fa1')
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass

from ...broker import Subscription
from ...errors import BrokerError, ErrorTable
from .connection import Clients
from .errors import error_code, queue_gone
from .filters import policy
from .settings import FORTNIGHT, SQSSettings
from .wire import DIRECT_MAX

__all__ = [
    "KIND",
    "NAME",
    "OURS",
    "PATTERN",
    "SUBSCRIPTION",
    "Names",
    "QueueInfo",
    "Topology",
    "pattern_tags",
    "patterns_of",
]

KIND = "herald-kind"
NAME = "herald-queue"
PATTERN = "herald-pattern-"
SUBSCRIPTION = "herald-subscription"
_MAX_NAME = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
OURS = re.compile(r".*-[qdx][0-9a-f]{10}(\.fifo)?")
"""What every queue name this adapter makes looks like."""


@dataclass(frozen=True, slots=True)
class Names:
    """The AWS names of one namespace."""

    namespace: str
    fifo: bool

    @property
    def prefix(self) -> str:
        return f"{self.namespace}-" if self.namespace else ""

    @property
    def topic(self) -> str:
        return f"{self.prefix}herald-events" + (".fifo" if self.fifo else "")

    def queue(self, queue: str) -> str:
        """The SQS queue of Herald queue ``<service>.<name>``."""
        return self._name("q", queue, self.fifo)

    def dead_letters(self, service: str) -> str:
        """The standard SQS queue of the service's dead letters."""
        return self._name("d", f"{service}.dlq", fifo=False)

    def lock(self, queue: str) -> str:
        """The FIFO queue holding an exclusive queue's lock token."""
        return self._name("x", f"{queue}.lock", fifo=True)

    def _name(self, kind: str, name: str, fifo: bool) -> str:
        digest = hashlib.blake2b(f"{kind}\0{name}".encode(), digest_size=5).hexdigest()
        suffix = ".fifo" if fifo else ""
        room = _MAX_NAME - len(self.prefix) - len(suffix) - 12
        readable = _UNSAFE.sub("_", name)[:room]
        return f"{self.prefix}{readable}-{kind}{digest}{suffix}"


def pattern_tags(patterns: tuple[str, ...]) -> dict[str, str]:
    """One tag per pattern (tag values hold 256 characters; patterns at most 255)."""
    return {
        f"{PATTERN}{hashlib.blake2b(p.encode(), digest_size=6).hexdigest()}": p for p in patterns
    }


def patterns_of(tags: dict[str, str]) -> tuple[str, ...]:
    """Every pattern declared for a queue, from its tags."""
    return tuple(sorted(v for k, v in tags.items() if k.startswith(PATTERN)))


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A declared queue: its URL and every pattern bound to it (all declarations)."""

    url: str
    patterns: tuple[str, ...]


class Topology:
    """Declares the namespace's topic, queues and subscriptions, and remembers URLs."""

    def __init__(self, clients: Clients, settings: SQSSettings, table: ErrorTable) -> None:
        self._sqs = clients.sqs
        self._sns = clients.sns
        self._settings = settings
        self._table = table
        self.names = Names(settings.namespace, settings.fifo)
        self._topic: str | None = None
        self._urls: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- the topic --------------------------------------------------------------------

    async def topic(self) -> str:
        """The namespace topic's ARN (created on first use)."""
        if self._topic is None:
            attributes = {"FifoTopic": "true", "ContentBasedDeduplication": "false"}
            with self._table.converting(f"creating the SNS topic {self.names.topic}"):
                reply = await self._sns.create_topic(
                    Name=self.names.topic, Attributes=attributes if self.names.fifo else {}
                )
            self._topic = str(reply["TopicArn"])
        return self._topic

    def queue_arn(self, topic: str, name: str) -> str:
        """A queue's ARN, from the topic's partition, region and account."""
        _, partition, _, region, account, _ = topic.split(":", 5)
        return f"arn:{partition}:sqs:{region}:{account}:{name}"

    # -- queues -----------------------------------------------------------------------

    async def declare(self, subscription: Subscription) -> QueueInfo:
        """Create the queue, tag its patterns and subscribe it with their union."""
        lock = self._locks.setdefault(subscription.queue, asyncio.Lock())
        async with lock:
            return await self._declare(subscription)

    async def _declare(self, subscription: Subscription) -> QueueInfo:
        topic = await self.topic()
        name = self.names.queue(subscription.queue)
        wanted = pattern_tags(subscription.patterns)
        tags = {KIND: "queue", NAME: subscription.queue[:256], **wanted}
        attributes = self._attributes(topic, name, self._settings.retention, self.names.fifo)
        doing = f"declaring {subscription.queue}"
        with self._table.converting(doing):
            url = await self._create(name, attributes, tags)
            current = await self.tags(url)
            missing = {k: v for k, v in wanted.items() if current.get(k) != v}
            if missing:
                await self._sqs.tag_queue(QueueUrl=url, Tags=missing)
                current.update(missing)
            patterns = patterns_of(current)
            arn = current.get(SUBSCRIPTION)
            if arn is None:
                arn = await self._subscribe(topic, self.queue_arn(topic, name), patterns)
                await self._sqs.tag_queue(QueueUrl=url, Tags={SUBSCRIPTION: arn})
            elif missing:
                await self._set_filter(arn, patterns)
            if missing:  # another declaration may have tagged others meanwhile
                again = patterns_of(await self.tags(url))
                if again != patterns:
                    await self._set_filter(arn, again)
                    patterns = again
        self._urls[name] = url
        return QueueInfo(url, patterns)

    async def dead_letter_queue(self, service: str) -> str:
        """The URL of the service's dead-letter queue (created if need be)."""
        name = self.names.dead_letters(service)
        url = self._urls.get(name)
        if url is None:
            tags = {KIND: "dlq", NAME: f"{service}.dlq"[:256]}
            attributes = {
                "MessageRetentionPeriod": str(self._settings.dlq_retention),
                "MaximumMessageSize": str(DIRECT_MAX),
            }
            with self._table.converting(f"declaring the dead-letter queue of {service}"):
                url = await self._create(name, attributes, tags)
            self._urls[name] = url
        return url

    async def lock_queue(self, queue: str) -> str:
        """The URL of an exclusive queue's lock queue (created if need be)."""
        name = self.names.lock(queue)
        url = self._urls.get(name)
        if url is None:
            tags = {KIND: "lock", NAME: f"{queue}.lock"[:256]}
            attributes = {
                "FifoQueue": "true",
                "ContentBasedDeduplication": "false",
                "MessageRetentionPeriod": str(FORTNIGHT),
            }
            with self._table.converting(f"declaring the lock of {queue}"):
                url = await self._create(name, attributes, tags)
            self._urls[name] = url
        return url

    async def url(self, name: str) -> str | None:
        """The URL of an existing queue of this namespace by its SQS name, or None."""
        url = self._urls.get(name)
        if url is None:
            try:
                reply = await self._sqs.get_queue_url(QueueName=name)
            except Exception as exc:
                if queue_gone(exc):
                    return None
                raise self._table.convert(exc, f"looking up the queue {name}") from exc
            url = self._urls[name] = str(reply["QueueUrl"])
        return url

    def forget(self, url: str) -> None:
        """A queue turned out not to exist (deleted, or a restarted emulator)."""
        for name, known in list(self._urls.items()):
            if known == url:
                del self._urls[name]
        self._topic = None

    async def tags(self, url: str) -> dict[str, str]:
        reply = await self._sqs.list_queue_tags(QueueUrl=url)
        return dict(reply.get("Tags") or {})

    async def remove(self, subscription: Subscription) -> None:
        """Unsubscribe and delete a queue (transient subscriptions, when they close)."""
        name = self.names.queue(subscription.queue)
        url = await self.url(name)
        if url is None:
            return
        with self._table.converting(f"removing {subscription.queue}"):
            arn = (await self.tags(url)).get(SUBSCRIPTION)
            if arn:
                await self._sns.unsubscribe(SubscriptionArn=arn)
            await self._sqs.delete_queue(QueueUrl=url)
        self._urls.pop(name, None)
        self._locks.pop(subscription.queue, None)

    async def _create(self, name: str, attributes: dict[str, str], tags: dict[str, str]) -> str:
        """The URL of queue ``name``, created with ``attributes`` and ``tags`` unless it
        exists (``CreateQueue`` of an existing queue would replace its tags on some
        implementations: the patterns, subscription and consumers they record). An
        existing queue gets ``MessageRetentionPeriod`` brought up to date."""
        try:
            reply = await self._sqs.get_queue_url(QueueName=name)
        except Exception as exc:
            if not queue_gone(exc):
                raise
        else:
            url = str(reply["QueueUrl"])
            await self._retention(url, attributes["MessageRetentionPeriod"])
            return url
        try:
            reply = await self._sqs.create_queue(QueueName=name, Attributes=attributes, tags=tags)
        except Exception as exc:
            if error_code(exc) not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
            url = str((await self._sqs.get_queue_url(QueueName=name))["QueueUrl"])
            await self._retention(url, attributes["MessageRetentionPeriod"])
            return url
        return str(reply["QueueUrl"])

    async def _retention(self, url: str, retention: str) -> None:
        reply = await self._sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["MessageRetentionPeriod"]
        )
        if reply.get("Attributes", {}).get("MessageRetentionPeriod") != retention:
            await self._sqs.set_queue_attributes(
                QueueUrl=url, Attributes={"MessageRetentionPeriod": retention}
            )

    def _attributes(self, topic: str, name: str, retention: int, fifo: bool) -> dict[str, str]:
        queue_arn = self.queue_arn(topic, name)
        allow_topic = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic}},
                }
            ],
        }
        attributes = {
            "MessageRetentionPeriod": str(retention),
            "Policy": json.dumps(allow_topic, separators=(",", ":")),
        }
        if fifo:
            attributes |= {
                "FifoQueue": "true",
                "ContentBasedDeduplication": "false",
                "DeduplicationScope": "messageGroup",
                "FifoThroughputLimit": "perMessageGroupId",
            }
        return attributes

    async def _subscribe(self, topic: str, endpoint: str, patterns: tuple[str, ...]) -> str:
        attributes = {"RawMessageDelivery": "true"}
        found = policy(patterns)
        if found is not None:
            attributes["FilterPolicy"] = json.dumps(found, separators=(",", ":"))
            attributes["FilterPolicyScope"] = "MessageAttributes"
        try:
            reply = await self._sns.subscribe(
                TopicArn=topic,
                Protocol="sqs",
                Endpoint=endpoint,
                Attributes=attributes,
                ReturnSubscriptionArn=True,
            )
            return str(reply["SubscriptionArn"])
        except Exception as exc:
            if error_code(exc) != "InvalidParameter":
                raise
        # subscribed already with another filter (a concurrent declaration): adopt it
        arn = await self._find_subscription(topic, endpoint)
        await self._set_filter(arn, patterns)
        return arn

    async def _find_subscription(self, topic: str, endpoint: str) -> str:
        paginator = self._sns.get_paginator("list_subscriptions_by_topic")
        async for page in paginator.paginate(TopicArn=topic):
            for found in page.get("Subscriptions", []):
                if found.get("Endpoint") == endpoint:
                    return str(found["SubscriptionArn"])
        raise BrokerError(f"SNS refused to subscribe {endpoint} and lists no subscription of it")

    async def _set_filter(self, arn: str, patterns: tuple[str, ...]) -> None:
        found = policy(patterns)
        await self._sns.set_subscription_attributes(
            SubscriptionArn=arn,
            AttributeName="FilterPolicy",
            AttributeValue="" if found is None else json.dumps(found, separators=(",", ":")),
        )
