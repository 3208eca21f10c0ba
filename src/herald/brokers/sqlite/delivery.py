"""Deliveries of the SQLite broker and how each settlement is written.

A settlement is one operation in the broker's next transaction, guarded by the
consumer id and the attempt the row was leased as. Whatever its outcome, the
delivery's prefetch slot is given back and the consumer stops renewing the row's
lease: after a failed settlement (the database stayed busy past ``timeout``) the row
is still leased to this consumer, but only until ``lease`` runs out; then it is
delivered again, to this consumer or another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ...broker import Delivery, Subscription
from ...deadletter import DeadLetter, DeadLetterReason
from ...window import Window
from .connection import Committer
from .membership import Membership
from .store import Store
from .wire import Row

__all__ = ["Holder", "SQLiteDelivery"]


class Holder:
    """What one consume loop's deliveries share: the connection, this consumer's
    leases and the prefetch window."""

    __slots__ = ("committer", "me", "membership", "window")

    def __init__(
        self, committer: Committer, membership: Membership, me: int, window: Window
    ) -> None:
        self.committer = committer
        self.membership = membership
        self.me = me
        self.window = window

    def took(self, seq: int, size: int) -> None:
        self.window.take(size)
        self.membership.hold(seq)

    def gave_back(self, seq: int, size: int) -> None:
        self.membership.let_go(seq)
        self.window.give(size)


class SQLiteDelivery(Delivery):
    __slots__ = ("_holder", "_lease", "_size")

    def __init__(self, row: Row, subscription: Subscription, holder: Holder, size: int) -> None:
        super().__init__(row.message, subscription, row.attempt, error=row.error)
        self._holder = holder
        self._lease = row.seq, row.token
        self._size = size

    async def _write(self, doing: str, operation: Callable[[Store], Any]) -> None:
        holder = self._holder
        try:
            await holder.committer.run(operation, f"{doing} message {self.message.id}")
        finally:
            holder.gave_back(self._lease[0], self._size)

    async def _ack(self) -> None:
        holder, (seq, token) = self._holder, self._lease
        try:
            await holder.committer.ack(seq, holder.me, token)
        finally:
            holder.gave_back(seq, self._size)

    async def _retry(self, delay: float, headers: Mapping[str, str]) -> None:
        (seq, token), me = self._lease, self._holder.me
        due, patch = time.time() + delay, dict(headers)
        await self._write("retrying", lambda s: s.retry(seq, me, token, due, patch))

    async def _release(self) -> None:
        lease, me = self._lease, self._holder.me
        await self._write("releasing", lambda s: s.release([lease], me, time.time()))

    async def _dead_letter(self, reason: DeadLetterReason) -> None:
        (seq, token), me = self._lease, self._holder.me
        service = self.subscription.service
        stored = DeadLetter(self.message, reason).to_stored()
        await self._write(
            "dead-lettering",
            lambda s: s.dead_letter(seq, me, token, service, stored, time.time()),
        )
