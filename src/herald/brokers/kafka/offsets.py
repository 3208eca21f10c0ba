"""Which offset a group may commit while deliveries finish out of order.

Herald runs several keys of one partition at once, so deliveries of a partition
finish in any order. A partition's committed offset is the lowest offset still
unfinished (or the next after the last fetched when none is): everything below it
is settled, nothing above it is skipped if the consumer dies.

>>> t = OffsetTracker()
>>> a, b, c = (t.fetched(("t", 0), offset) for offset in (10, 11, 12))
>>> t.committable()
{('t', 0): 10}
>>> t.finish(c), t.committable(), t.unfinished(), t.settled()
(True, {('t', 0): 10}, 2, 1)
>>> t.finish(a), t.committable()
(True, {('t', 0): 11})
>>> t.finish(b), t.committable()
(True, {('t', 0): 13})
>>> t.mark_committed(t.committable()); t.committable()
{}
>>> t.skipped(("t", 0), 13); t.committable(), t.unfinished()
({('t', 0): 14}, 0)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass, field

__all__ = ["OffsetTracker", "Partition", "Ticket"]


@dataclass(eq=False, slots=True)
class Partition:
    """One assignment of one partition: fetched offsets in order, and which are done."""

    pending: deque[int] = field(default_factory=deque)
    done: set[int] = field(default_factory=set)
    next: int | None = None
    committed: int | None = None

    def position(self) -> int | None:
        """The offset to commit: the lowest unfinished, else the next to fetch."""
        while self.pending and self.pending[0] in self.done:
            self.done.discard(self.pending.popleft())
        return self.pending[0] if self.pending else self.next


@dataclass(frozen=True, slots=True)
class Ticket:
    """One fetched record of one assignment of a partition."""

    key: Hashable
    offset: int
    partition: Partition


class OffsetTracker:
    """Fetched and finished offsets per partition, for the partitions assigned now."""

    def __init__(self) -> None:
        self._partitions: dict[Hashable, Partition] = {}

    def fetched(self, key: Hashable, offset: int) -> Ticket:
        """Count a record handed out (offsets of a partition arrive in order)."""
        partition = self._partitions.setdefault(key, Partition())
        partition.pending.append(offset)
        partition.next = offset + 1
        return Ticket(key, offset, partition)

    def skipped(self, key: Hashable, offset: int) -> None:
        """Count a record passed over (never handed out) as fetched and finished."""
        partition = self._partitions.setdefault(key, Partition())
        if partition.pending:
            partition.pending.append(offset)
            partition.done.add(offset)
        partition.next = offset + 1

    def unfetched(self, ticket: Ticket) -> None:
        """The consumer stopped before handing out the last record it counted: it no
        longer counts, and nothing from its offset on is committed (the partition's
        next owner reads it)."""
        partition = ticket.partition
        if partition.pending and partition.pending[-1] == ticket.offset:
            partition.pending.pop()
            partition.done.discard(ticket.offset)
            partition.next = ticket.offset

    def finish(self, ticket: Ticket) -> bool:
        """Mark a record settled; False when its partition was taken away since."""
        if self._partitions.get(ticket.key) is not ticket.partition:
            return False
        ticket.partition.done.add(ticket.offset)
        return True

    def unfinished(self, keys: Collection[Hashable] | None = None) -> int:
        """How many fetched records of these partitions (all: None) are not settled."""
        return sum(
            len(p.pending) - len(p.done)
            for k, p in self._partitions.items()
            if keys is None or k in keys
        )

    def settled(self) -> int:
        """How many settled records wait for a lower one of their partition to be
        settled before their offsets can be committed."""
        total = 0
        for partition in self._partitions.values():
            partition.position()
            total += len(partition.done)
        return total

    def committable(self, keys: Collection[Hashable] | None = None) -> dict[Hashable, int]:
        """Offsets to commit that moved since the last commit."""
        found: dict[Hashable, int] = {}
        for key, partition in self._partitions.items():
            if keys is not None and key not in keys:
                continue
            position = partition.position()
            if position is not None and position != partition.committed:
                found[key] = position
        return found

    def mark_committed(self, offsets: Mapping[Hashable, int]) -> None:
        for key, offset in offsets.items():
            partition = self._partitions.get(key)
            if partition is not None:
                partition.committed = offset

    def forget(self, keys: Collection[Hashable]) -> None:
        """The partitions were taken away: their tickets no longer count."""
        for key in keys:
            self._partitions.pop(key, None)
