"""What some brokers can do beyond the core contract, checked with ``isinstance``.

>>> import herald
>>> from herald.brokers.memory import MemoryBroker
>>> broker = MemoryBroker("capabilities-doctest")
>>> isinstance(broker, DeadLetterAdmin), isinstance(broker, QueueInspection)
(True, True)
>>> isinstance(broker, RetainedHistory)
False

- :class:`DeadLetterAdmin`: list, replay (as they are, or one edited) and purge a
  service's dead letters.
- :class:`ReplyCapable`: a native request/reply transport (RabbitMQ's direct reply-to,
  NATS inboxes); other brokers reply through an ordinary transient queue.
- :class:`QueueInspection`: depth, in flight, consumers and the age of the oldest
  waiting message, per queue, for dashboards and metrics.
- :class:`RetainedHistory`: start a new queue with the retained events it missed
  (backfill).
- :class:`ConnectionStatus`: whether the connection to the server is up right now
  (readiness probes); a broker without it is taken as connected while open.
- :class:`ConsumerStatus`: whether a queue's consumer takes deliveries yet (readiness
  probes), for brokers where subscribing is not enough (a Kafka group member waits
  for the group to assign it partitions); a broker without it is taken as consuming
  once its consumer started.

The bus raises :class:`herald.CapabilityError` when asked for one its broker lacks.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from .broker import ProgressCallback, Subscription
from .deadletter import DeadLetter
from .message import Message

__all__ = [
    "ConnectionStatus",
    "ConsumerStatus",
    "CoreRequestTransport",
    "DeadLetterAdmin",
    "QueueInspection",
    "QueueStats",
    "ReplyCapable",
    "ReplyTransport",
    "RetainedHistory",
]


@runtime_checkable
class DeadLetterAdmin(Protocol):
    """A service's dead letters (``<service>.dlq``): read, replay, purge."""

    async def dead_letters(self, service: str, limit: int | None = None) -> list[DeadLetter]:
        """The dead letters of ``service``, oldest first, without removing them."""

    async def replay_dead_letters(
        self,
        service: str,
        ids: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Put dead letters (all, or those with the given message ids) back on the
        queues they came from, as first attempts; return how many were replayed."""

    async def replay_edited_dead_letter(self, service: str, id: str, message: Message) -> bool:
        """Put ``message`` (dead letter ``id`` of ``service``, edited: see
        :meth:`herald.DeadLetter.edited`) on the queue that dead letter came from, as a
        first attempt, and remove the dead letter: the oldest one if several have that
        id. Return False, changing nothing, when there is no such dead letter. The
        caller has validated ``message``; the queue is checked as for a replay."""

    async def purge_dead_letters(self, service: str, ids: Collection[str] | None = None) -> int:
        """Delete dead letters (all, or those ids) of ``service``; return how many."""


class ReplyTransport(abc.ABC):
    """How a bus sends requests and receives the replies to them."""

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


class CoreRequestTransport(ReplyTransport):
    """A reply transport that can also send requests without storing them
    (``bus.request(..., durable=False)``): faster, but lost when no responder is up,
    and then the call fails at once with :class:`herald.NoResponders`."""

    @abc.abstractmethod
    async def send_core(self, request: Message) -> None:
        """Publish a request to one live responder, storing nothing."""


@runtime_checkable
class ReplyCapable(Protocol):
    """A broker with its own request/reply mechanism."""

    def reply_transport(self) -> ReplyTransport:
        """A new transport for one bus's calls."""

    def is_reply_address(self, address: str) -> bool:
        """Whether ``address`` is a well-formed reply address of this broker's own
        kind. Addresses come from the wire: a forged one must be refused, never
        published to."""

    async def send_reply(self, address: str, reply: Message) -> None:
        """Deliver a reply to an address :meth:`is_reply_address` accepted."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue as its broker sees it now. ``None`` means the broker cannot tell.

    depth:       messages waiting to be delivered (retries waiting out their delay too).
    in_flight:   messages delivered to a consumer and not yet settled.
    consumers:   consumers attached to the queue (standbys of an exclusive queue too).
    oldest_age:  seconds the oldest waiting message has waited (0 when none waits).
    """

    queue: str
    depth: int
    in_flight: int | None
    consumers: int | None
    oldest_age: float | None


@runtime_checkable
class QueueInspection(Protocol):
    """Counts per queue, read from the broker (not from one process's view)."""

    async def inspect_queues(self, queues: Collection[str] | None = None) -> list[QueueStats]:
        """Stats of the named queues (``<service>.<name>``; unknown ones are left
        out), or of every queue of this namespace when ``queues`` is None; sorted by
        queue name."""


@runtime_checkable
class RetainedHistory(Protocol):
    """A broker that keeps published events after delivery, so that a queue created
    later can be given what it missed (``@svc.on(Event, backfill=True)``).

    A broker whose history is switched off by its settings (SQLite without
    ``retain=``, NATS with ``retention=interest``) raises
    :class:`herald.CapabilityError` from :meth:`backfill`, naming the setting.
    """

    async def backfill(self, subscription: Subscription, since: datetime | None = None) -> int:
        """Declare the subscription's queue like ``declare``; if this call creates it,
        the queue starts with the retained events its patterns match (published at or
        after ``since``; ``None``: the oldest retained), ahead of and in one order with
        everything published later, each once. Return how many retained events it was
        given: 0 when the queue existed already, so a restart or a second replica
        replays nothing."""


@runtime_checkable
class ConnectionStatus(Protocol):
    """A broker that keeps a connection to its server and reconnects by itself."""

    @property
    def connected(self) -> bool:
        """Whether the connection is up now: False before ``connect()``, while
        reconnecting, and after ``close()``."""


@runtime_checkable
class ConsumerStatus(Protocol):
    """A broker whose consumers take a while after subscribing to take deliveries."""

    def consuming(self, queue: str) -> bool:
        """Whether a consumer of ``queue`` started by this broker takes deliveries now
        (Kafka: its group completed a join with it, so it holds its assignment)."""
