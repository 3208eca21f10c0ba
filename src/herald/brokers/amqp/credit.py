"""How much RabbitMQ may push to a consumer: its prefetch in messages and bytes.

``basic.qos`` counts messages only (a ``prefetch_size`` makes RabbitMQ close the
connection: ``NOT_IMPLEMENTED``), per consumer and fixed when it subscribes. So the
bytes are bounded here, from the sizes of recent bodies: a consumer subscribed with
``credit`` may be sent ``credit`` messages, each assumed as large as the largest of
the last 32 bodies received (before the first, ``max_message_bytes``).

A channel's :class:`Ledger` keeps what each of its consumers was promised (its
credit) and holds (received, not settled). What a new consumer may be promised is
the room left under both bounds next to what cancelled consumers still hold and what
the live ones were promised. A shared queue's channel adds a consumer for that room
when it has none, when the room is at least what the live ones were promised (the
credit grows as soon as small bodies are seen), and whenever every live one used its
whole credit while room is left: it never waits while one more message fits. When
larger bodies make the promises exceed a bound, it subscribes one consumer for the
room left next to everything held (at least one message: a transient queue goes
with its last consumer) and cancels the others (what they hold stays held until
settled).

An exclusive queue's channel has one consumer (a second one would only wait behind
it); it replaces it by one with another credit (see :mod:`.consumer`) when it must
(larger bodies), when the new one may be promised twice as much, or more while the
current one holds all it was promised: its credit is at least half of what fits.

>>> flow = Flow(Prefetch(messages=8, bytes=4 * 2**20), largest=16 * 2**20)
>>> ledger = Ledger(flow)
>>> ledger.room()  # before any body: one of 16 MiB fits 4 MiB, alone
1
>>> ledger.promise("a", 1); ledger.received("a", 1024); flow.observe(1024)
>>> flow.credit(), ledger.room(), ledger.exhausted(), ledger.wants_more()
(8, 7, True, True)
>>> ledger.promise("b", 7); ledger.room(), ledger.total, ledger.wants_more()
(0, (1, 1024), False)
"""

from __future__ import annotations

from collections import deque

from ...broker import Prefetch
from ...window import Window

__all__ = ["SIZES_SEEN", "Flow", "Ledger"]

SIZES_SEEN = 32


class Flow:
    """One consumer's prefetch across its channels: the window of deliveries handed
    out, and the sizes of recent bodies."""

    __slots__ = ("_credit", "_largest", "_sizes", "prefetch", "window")

    def __init__(self, prefetch: Prefetch, largest: int) -> None:
        self.prefetch = prefetch
        self.window = Window(prefetch)
        self._sizes: deque[int] = deque(maxlen=SIZES_SEEN)
        self._largest = max(largest, 1)
        self._credit = self._credit_for(self._largest)

    @property
    def largest(self) -> int:
        """The largest of the recent bodies (before any, the largest allowed)."""
        return self._largest

    @property
    def informed(self) -> bool:
        """Whether a body was seen."""
        return bool(self._sizes)

    def credit(self) -> int:
        """How many messages one consumer holding nothing may be sent."""
        return self._credit

    def observe(self, size: int) -> None:
        """Count a body received."""
        sizes = self._sizes
        dropped = sizes[0] if len(sizes) == SIZES_SEEN else 0
        sizes.append(size)
        largest = self._largest
        if len(sizes) == 1 or size > largest or (dropped >= largest > size):
            largest = max(*sizes, 1)
        if largest != self._largest:
            self._largest = largest
            self._credit = self._credit_for(largest)

    def _credit_for(self, largest: int) -> int:
        return max(1, min(self.prefetch.messages, self.prefetch.bytes // largest))


class Ledger:
    """One channel's consumers: what each was promised and holds, by consumer tag."""

    __slots__ = ("_held", "credits", "flow")

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.credits: dict[str, int] = {}
        """Live (subscribed) consumers and their credit."""
        self._held: dict[str, list[int]] = {}

    @property
    def total(self) -> tuple[int, int]:
        """(messages, bytes) received and not settled, by every consumer."""
        return sum(h[0] for h in self._held.values()), sum(h[1] for h in self._held.values())

    def promise(self, tag: str, credit: int) -> None:
        self.credits[tag] = credit

    def forget(self, tag: str) -> None:
        """A consumer was cancelled: what it holds stays held until settled."""
        self.credits.pop(tag, None)

    def received(self, tag: str, size: int) -> None:
        held = self._held.setdefault(tag, [0, 0])
        held[0] += 1
        held[1] += size

    def settled(self, tag: str, size: int) -> None:
        held = self._held.get(tag)
        if held is not None:
            held[0] -= 1
            held[1] -= size
            if held[0] <= 0 and tag not in self.credits:
                del self._held[tag]

    def room(self) -> int:
        """How many messages a new consumer may be promised now; negative when the
        live consumers were promised more than fits (larger bodies came)."""
        flow = self.flow
        gone, gone_bytes = self._gone()
        if not self.credits and gone <= 0:
            return flow.credit()
        live = sum(self.credits.values())
        by_count = flow.prefetch.messages - gone - live
        by_bytes = (flow.prefetch.bytes - gone_bytes) // flow.largest - live
        return min(flow.credit(), by_count, by_bytes)

    def replacing(self) -> int:
        """How many messages one consumer may be promised in place of all the live
        ones (at least one)."""
        held, held_bytes = self.total
        flow = self.flow
        if held <= 0:
            return flow.credit()
        by_count = flow.prefetch.messages - held
        by_bytes = (flow.prefetch.bytes - held_bytes) // flow.largest
        return max(1, min(flow.credit(), by_count, by_bytes))

    def exhausted(self) -> bool:
        """Whether every live consumer holds all it was promised (RabbitMQ sends it
        nothing more until some of it is settled)."""
        return all(self._held.get(tag, (0, 0))[0] >= credit for tag, credit in self.credits.items())

    def wants_more(self) -> bool:
        """Whether a shared queue's channel should add a consumer now."""
        return self._wants_more(self.room())

    def over_promised(self) -> bool:
        return bool(self.credits) and self.room() < 0

    def wants_change(self) -> bool:
        """Whether a shared queue's channel should replace its consumers
        (:meth:`over_promised`) or add one (:meth:`wants_more`)."""
        room = self.room()
        if room < 0:
            return bool(self.credits)
        return self._wants_more(room)

    def _wants_more(self, room: int) -> bool:
        if room < 1:
            return False
        return not self.credits or room >= sum(self.credits.values()) or self.exhausted()

    def wants_switch(self) -> bool:
        """Whether an exclusive queue's channel should replace its one consumer by
        one with another credit: it must (larger bodies came), or the new one may be
        promised twice as much, or more while the current one used all it has."""
        if not self.credits:
            return False
        if self.room() < 0:
            return True
        current, new = sum(self.credits.values()), self.replacing()
        return new >= 2 * current or (new > current and self.exhausted())

    def _gone(self) -> tuple[int, int]:
        """(messages, bytes) held by cancelled consumers."""
        messages = size = 0
        for tag, (held, held_bytes) in self._held.items():
            if tag not in self.credits:
                messages += held
                size += held_bytes
        return messages, size
