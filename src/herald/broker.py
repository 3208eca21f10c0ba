"""The broker contract: the one small protocol every adapter implements.

A broker stores published batches durably, routes each message to every queue bound
to a matching topic pattern, hands deliveries out within a prefetch window, and takes
back exactly one settlement per delivery: ack, retry after a delay, release, or
dead-letter. Everything else (decoding, the retry policy, concurrency, ordering per
key) lives in the runtime; what only some brokers can do is an optional capability
(:mod:`herald.capabilities`), checked with ``isinstance``.

An adapter subclasses :class:`Broker` and :class:`Delivery` and fills in the
underscored hooks; the base classes enforce what every adapter must do alike:

- :meth:`Broker.publish` refuses a body over ``features.max_message_bytes`` with
  :class:`herald.MessageTooLargeError` before the adapter sees the batch;
- a :class:`Delivery` is settled once: a second settlement raises
  :class:`herald.SettleError` and reaches no broker.

Every server broker accepts the URL query parameter ``namespace=NAME``: a prefix for
every name it creates on the server (exchange, queues, streams, keys), so that
tenants, environments and test runs can share one server without seeing each other.
Without it the names are exactly those of the wire conventions (exchange ``events``,
queues ``<service>.<event type>``, dead letters ``<service>.dlq``).
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Self

from .deadletter import DeadLetterReason
from .errors import (
    CapabilityError,
    HorizonError,
    MessageError,
    MessageTooLargeError,
    SettleError,
)
from .message import Message
from .schedule import SCHEDULED_TYPE, SCHEDULER_SERVICE, due_of, wrap
from .topic import validate_pattern

__all__ = [
    "SCHEDULER_SUBSCRIPTION",
    "Broker",
    "Delivery",
    "Features",
    "Prefetch",
    "ProgressCallback",
    "Settlement",
    "Subscription",
    "dead_letter_queue",
]

MiB = 1024 * 1024
ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done, total)`` by long operations."""
Settlement = Literal["ack", "retry", "release", "dead_letter"]


@dataclass(frozen=True, slots=True)
class Features:
    """What a broker guarantees; the conformance suite holds each broker to them.

    persistent:             stored messages survive the client process (and broker) restarting.
    multi_process:          several OS processes can publish and consume through it.
    retry_headers:          a retried delivery carries the headers the runtime added on retry.
    counts_redelivery:      a delivery lost with its consumer (crash) counts as an attempt.
    release_counts_attempt: a released delivery comes back as the next attempt.
    max_message_bytes:      the largest body the broker accepts.
    native_schedule:        the broker holds a scheduled message until it is due itself;
                            else it waits in Herald's scheduler queue (docs/scheduling.md).
    max_schedule_delay:     how far ahead (seconds) a message may be scheduled; further
                            raises :class:`herald.HorizonError`.
    max_retry_delay:        the longest delay one retry waits; longer ones wait that long.
    retry_delay_steps:      when not empty, the only delays a retry waits (seconds): any
                            other is rounded up to the next step.

    A broker may refine ``persistent`` and ``max_message_bytes`` from the server once
    connected (Redis with an append-only file, NATS's ``max_payload``).
    """

    persistent: bool = True
    multi_process: bool = True
    retry_headers: bool = True
    counts_redelivery: bool = True
    release_counts_attempt: bool = False
    max_message_bytes: int = 16 * MiB
    native_schedule: bool = False
    max_schedule_delay: float = math.inf
    max_retry_delay: float = math.inf
    retry_delay_steps: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Prefetch:
    """How much one consumer may hold unsettled: ``messages`` and bytes of body.

    A broker hands out a message when both bounds have room, and always at least one,
    so a single body larger than ``bytes`` still flows, one at a time.
    """

    messages: int = 64
    bytes: int = 64 * MiB

    def __post_init__(self) -> None:
        if self.messages < 1 or self.bytes < 1:
            raise ValueError(f"prefetch bounds must be >= 1, got {self}")


@dataclass(frozen=True, slots=True)
class Subscription:
    """A durable queue ``<service>.<name>`` bound to one or more topic patterns.

    ``durable=False``: a transient queue, removed when its consumer stops (RPC
    replies, ``herald tail``). ``exclusive=True``: one consumer at a time takes
    deliveries from the queue; other consumers of it (other processes of the same
    service) stand by and take over when it stops or dies, so the order per key holds
    across processes.

    >>> s = Subscription("payroll", "employee.created")
    >>> s.queue, s.patterns, s.dead_letter_queue
    ('payroll.employee.created', ('employee.created',), 'payroll.dlq')
    """

    service: str
    name: str
    patterns: tuple[str, ...] = field(default=())
    durable: bool = True
    exclusive: bool = False

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


SCHEDULER_SUBSCRIPTION = Subscription(SCHEDULER_SERVICE, "scheduled", (SCHEDULED_TYPE,))
"""Herald's scheduler queue, ``herald.scheduled`` (see :mod:`herald.schedule`)."""


def dead_letter_queue(service: str) -> str:
    """The one dead-letter queue of a service: ``<service>.dlq``."""
    return f"{service}.dlq"


class Delivery(abc.ABC):
    """One message handed to one queue's consumer; settle it exactly once.

    ``error`` is set when the adapter could not rebuild a valid message from what
    arrived (bad attributes, a malformed runtime header): the runtime dead-letters
    such a delivery with that error as the reason, and never runs a handler on it.
    """

    __slots__ = ("attempt", "error", "message", "settlement", "subscription")

    def __init__(
        self,
        message: Message,
        subscription: Subscription,
        attempt: int,
        *,
        error: MessageError | None = None,
    ) -> None:
        self.message = message
        self.subscription = subscription
        self.attempt = attempt if attempt >= 1 else 1
        """1 for the first delivery; each retry (and, where the broker counts them,
        each redelivery after a consumer died) adds one."""
        self.error = error
        self.settlement: Settlement | None = None
        """How the delivery was settled, once it was."""

    @property
    def size(self) -> int:
        """Bytes of body, as counted against :attr:`Prefetch.bytes`."""
        return len(self.message.body)

    def _settle(self, how: Settlement) -> None:
        if self.settlement is not None:
            raise SettleError(
                f"cannot {how.replace('_', '-')} message {self.message.id} from "
                f"{self.subscription.queue}: it was already settled ({self.settlement})"
            )
        self.settlement = how

    async def ack(self) -> None:
        """Done: remove the message from the queue."""
        if self.settlement is not None:
            self._settle("ack")  # raises
        self.settlement = "ack"
        await self._ack()

    async def retry(self, delay: float, headers: Mapping[str, str]) -> None:
        """Deliver again after ``delay`` seconds, with ``headers`` merged in, as attempt+1."""
        self._settle("retry")
        await self._retry(max(0.0, delay), headers)

    async def release(self) -> None:
        """Give back unhandled (shutdown): redeliver soon; whether that counts as an
        attempt is the broker's ``Features.release_counts_attempt``."""
        self._settle("release")
        await self._release()

    async def dead_letter(self, reason: DeadLetterReason) -> None:
        """Move to the service's dead-letter queue with ``reason``; remove from this queue."""
        self._settle("dead_letter")
        await self._dead_letter(reason)

    @abc.abstractmethod
    async def _ack(self) -> None: ...

    @abc.abstractmethod
    async def _retry(self, delay: float, headers: Mapping[str, str]) -> None: ...

    @abc.abstractmethod
    async def _release(self) -> None: ...

    @abc.abstractmethod
    async def _dead_letter(self, reason: DeadLetterReason) -> None: ...


class Broker(abc.ABC):
    """Base class of broker adapters. ``async with broker:`` connects and closes.

    Adapters are found by URL scheme through the ``herald.brokers`` entry-point group
    (see :mod:`herald.brokers`); each parses its own URLs in :meth:`from_url`.
    """

    features: Features = Features()
    schemes: ClassVar[tuple[str, ...]] = ()
    """The URL schemes this adapter serves."""

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str) -> Self:
        """The (unconnected) broker a URL names; raises :class:`herald.BrokerURLError`
        naming the part of the URL that is wrong."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections; idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop consumers, flush what is pending and close; idempotent."""

    async def publish(self, messages: Sequence[Message]) -> None:
        """Store ``messages`` durably in every bound queue; return once the broker confirmed.

        Publishing a type no queue is bound to is not an error; the message is dropped
        by routing, as on any topic exchange. A body over ``max_message_bytes`` raises
        :class:`herald.MessageTooLargeError` and nothing of the batch is published.

        A message whose ``herald-not-before`` header (:mod:`herald.schedule`) is still
        ahead goes to :meth:`_publish_later`; one due further ahead than
        ``features.max_schedule_delay`` raises :class:`herald.HorizonError`, and a
        malformed due time :class:`herald.HeaderError`, before anything is published.
        """
        if not messages:
            return
        limit = self.features.max_message_bytes
        now: list[Message] = []
        later: list[Message] = []
        clock = time.time()
        for message in messages:
            if len(message.body) > limit:
                raise MessageTooLargeError(
                    message.id, len(message.body), limit, f"{self.schemes[0]}://"
                )
            due = due_of(message)
            if due is None or due <= clock:
                now.append(message)
            elif due - clock > self.features.max_schedule_delay:
                raise HorizonError(
                    message.id,
                    due - clock,
                    self.features.max_schedule_delay,
                    f"{self.schemes[0]}://",
                )
            else:
                later.append(message)
        if now:
            await self._publish(now)
        if later:
            await self._publish_later(later)

    @abc.abstractmethod
    async def _publish(self, messages: Sequence[Message]) -> None:
        """Store a non-empty batch whose sizes were checked."""

    async def _publish_later(self, messages: Sequence[Message]) -> None:
        """Store a non-empty batch of messages that are not due yet (each carries its
        due time, :func:`herald.schedule.due_of`) so that they reach every bound queue
        at their due time. By default they go to Herald's scheduler queue as
        envelopes (the queue is declared first, so that none is dropped by routing);
        a broker with ``native_schedule`` holds them itself."""
        if not getattr(self, "_scheduler_declared", False):
            await self.declare(SCHEDULER_SUBSCRIPTION)
            self._scheduler_declared = True
        await self._publish([wrap(message) for message in messages])

    @abc.abstractmethod
    async def declare(self, subscription: Subscription) -> None:
        """Create the queue and bind its patterns; idempotent. Messages published after
        this returns are kept for the queue even while nobody consumes it."""

    @abc.abstractmethod
    def consume(
        self, subscription: Subscription, prefetch: Prefetch
    ) -> AsyncGenerator[Delivery, None]:
        """Deliveries from the queue, within ``prefetch`` unsettled at a time.

        Closing the generator stops consuming; unsettled deliveries are left for
        redelivery. A transient subscription's queue is removed when it closes.
        """

    async def destroy(self) -> None:
        """Delete everything this broker created in its namespace (queues, dead
        letters, exchanges, streams, keys). For test teardown; loses messages."""
        raise CapabilityError(f"{type(self).__name__} cannot destroy its namespace")

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
