"""The broker contract: the one small protocol every adapter implements.

A broker stores published messages durably, routes each to every queue bound to a
matching topic pattern, hands deliveries out under a prefetch limit, and takes back
an ack, a delayed retry, a release or a dead-lettering for each. Everything else
(decoding, retries policy, concurrency, ordering per key) lives in the runtime.

Every server broker accepts the URL query parameter ``namespace=NAME``: a prefix for
every name it creates on the server (exchange, queues, streams, keys), so that
tenants, environments and test runs can share one server without seeing each other.
Without it the names are exactly those of the wire conventions (exchange ``events``,
queues ``<service>.<event type>``, dead letters ``<service>.dlq``).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from .deadletter import DeadLetter, DeadLetterReason
from .message import Message
from .topic import validate_pattern

__all__ = ["Broker", "Delivery", "Features", "ProgressCallback", "ReplyTransport", "Subscription"]

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done, total)`` by long operations."""


@dataclass(frozen=True, slots=True)
class Features:
    """What a broker guarantees; the conformance suite runs the scenarios that apply.

    persistent:        stored messages survive the client process (and broker) restarting.
    multi_process:     several OS processes can publish and consume through it.
    restartable:       a real server that tests may stop and start (reconnect scenario).
    retry_headers:     a retried delivery carries headers the runtime added on retry.
    counts_redelivery: a delivery lost with its consumer (crash) counts as an attempt.
    max_message_bytes: the largest body the broker accepts.

    Class-level features are the conservative ones; a broker may raise ``persistent``
    or ``restartable`` once connected (e.g. Redis with an append-only file), never
    lower them, and may refine ``max_message_bytes`` from the server.
    """

    persistent: bool = True
    multi_process: bool = True
    restartable: bool = False
    retry_headers: bool = True
    counts_redelivery: bool = True
    max_message_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Subscription:
    """A durable queue ``<service>.<name>`` bound to one or more topic patterns.

    >>> s = Subscription("payroll", "employee.created")
    >>> s.queue, s.patterns, s.dead_letter_queue
    ('payroll.employee.created', ('employee.created',), 'payroll.dlq')
    """

    service: str
    name: str
    patterns: tuple[str, ...] = field(default=())
    durable: bool = True

    def __post_init__(self) -> None:
        if not self.service or "." in self.service or "/" in self.service:
            raise ValueError(f"invalid service name {self.service!r}: no dots or slashes")
        if not self.patterns:
            object.__setattr__(self, "patterns", (self.name,))
        for pattern in self.patterns:
            validate_pattern(pattern)

    @property
    def queue(self) -> str:
        return f"{self.service}.{self.name}"

    @property
    def dead_letter_queue(self) -> str:
        return dead_letter_queue(self.service)


def dead_letter_queue(service: str) -> str:
    """The one dead-letter queue of a service: ``<service>.dlq``."""
    return f"{service}.dlq"


class Delivery(abc.ABC):
    """One message handed to one queue's consumer; settle it exactly once."""

    __slots__ = ("attempt", "message", "subscription")

    def __init__(self, message: Message, subscription: Subscription, attempt: int) -> None:
        self.message = message
        self.subscription = subscription
        self.attempt = attempt
        """1 for the first delivery; each retry (and, where the broker counts them,
        each redelivery after a consumer died) adds one."""

    @abc.abstractmethod
    async def ack(self) -> None:
        """Done: remove the message from the queue."""

    @abc.abstractmethod
    async def retry(self, delay: float, headers: Mapping[str, str]) -> None:
        """Deliver again after ``delay`` seconds, with ``headers`` merged in, as attempt+1."""

    @abc.abstractmethod
    async def release(self) -> None:
        """Give back unhandled (shutdown): redeliver soon, without counting an attempt
        where the broker can tell (JetStream counts it; see the adapter's docs)."""

    @abc.abstractmethod
    async def dead_letter(self, reason: DeadLetterReason) -> None:
        """Move to the service's dead-letter queue with ``reason``; remove from this queue."""


class ReplyTransport(abc.ABC):
    """How a bus sends requests and receives the replies to them.

    The generic transport (``herald.rpc.QueueReplyTransport``) uses one transient
    queue per bus; a broker with a native mechanism (RabbitMQ's direct reply-to, NATS
    inboxes) returns its own from :meth:`Broker.reply_transport`.
    """

    address: str
    """What requests carry in ``herald-reply-to``; valid once :meth:`start` returned."""

    @abc.abstractmethod
    async def start(self, on_reply: Callable[[Message], None]) -> None:
        """Begin receiving replies; call ``on_reply`` for each. Idempotent."""

    @abc.abstractmethod
    async def send(self, request: Message) -> None:
        """Publish a request (its ``herald-reply-to`` header is already set)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop receiving; nothing of the transport remains on the broker."""


class Broker(abc.ABC):
    """Base class of broker adapters. ``async with broker:`` connects and closes."""

    features: Features = Features()
    scheme: str = ""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections; idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop consumers, flush what is pending and close; idempotent."""

    @abc.abstractmethod
    async def publish(self, messages: Sequence[Message]) -> None:
        """Store ``messages`` durably in every bound queue; return once the broker confirmed.

        Publishing a type no queue is bound to is not an error; the message is dropped
        by routing, as on any topic exchange.
        """

    @abc.abstractmethod
    async def declare(self, subscription: Subscription) -> None:
        """Create the queue and bind its patterns; idempotent. Messages published after
        this returns are kept for the queue even while nobody consumes it."""

    @abc.abstractmethod
    def consume(self, subscription: Subscription, prefetch: int) -> AsyncGenerator[Delivery, None]:
        """Deliveries from the queue, at most ``prefetch`` unsettled at a time.

        Closing the generator stops consuming; unsettled deliveries are left for
        redelivery. A transient subscription's queue is removed when it closes.
        """

    @abc.abstractmethod
    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        """The dead letters of ``service``, oldest first, without removing them."""

    @abc.abstractmethod
    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Put dead letters (all, or those with the given message ids) back on their
        queues as first attempts; return how many were replayed."""

    @abc.abstractmethod
    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        """Delete dead letters (all, or those ids) of ``service``; return how many."""

    def reply_transport(self) -> ReplyTransport | None:
        """A native request/reply transport, or None for the generic queue-based one."""
        return None

    async def send_reply(self, reply_to: str, reply: Message) -> None:
        """Deliver an RPC reply to the address a request carried. The default routes
        it like any message, with the address as its type."""
        await self.publish((replace(reply, type=reply_to),))

    async def destroy(self) -> None:
        """Delete everything this broker created in its namespace (queues, dead
        letters, exchanges, streams, keys). For test teardown; loses messages."""
        raise NotImplementedError(f"{type(self).__name__} cannot destroy its namespace")

    async def __aenter__(self) -> Broker:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
