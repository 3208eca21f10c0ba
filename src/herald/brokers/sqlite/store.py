"""The SQL of deliveries and consumers, run on the broker's one connection.

A :class:`Store` is used from a single thread (the broker's database thread) inside
transactions that :class:`~herald.brokers.sqlite.connection.Committer` opens, so its
methods never begin or commit themselves. The tables are described in
:mod:`herald.brokers.sqlite.topology`.

Leases: a claim sets ``consumer`` and ``lease_until = now + lease``; the consumer
renews ``lease_until`` of the rows it still holds unsettled with every heartbeat.
Settling needs the holder's consumer id and the attempt it was handed (a stale
settlement touches nothing). A row whose lease ran out (its settlement failed, or
its holder hung) is made ready again by :meth:`Store.sweep_expired`.

Exclusive queues: a consume loop claims from one only while it holds the queue
(:meth:`Store.hold`, checked in the transaction of every claim). A holder whose loop
stopped keeps the queue (``turn`` NULL) until its deliveries of the queue are settled
or their leases run out, so what it gives back is claimed before anything newer; a
holder that is forgotten (its process died, its heartbeat stopped) loses the queue in
the transaction that gives its deliveries back. Another loop of the same consumer may
take the queue over at once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from ...message import Message
from .topology import Routes, bump, declare_queue, drop_queues
from .wire import COLUMNS, Encoded, encode_message

__all__ = ["COLUMNS_SQL", "INSERT", "Claimed", "ConsumerRow", "Store"]

COLUMNS_SQL = ", ".join(COLUMNS)
_MARKS = ", ".join("?" * len(COLUMNS))
INSERT = f"INSERT INTO herald_deliveries (queue, since, {COLUMNS_SQL}) VALUES (?, ?, {_MARKS})"
_UNRETAINED = ("herald.", "rpc.")
"""Types kept out of the history: replies and requests are answered once, not replayed."""
_RETAIN = f"INSERT INTO herald_history (stored, {COLUMNS_SQL}) VALUES (?, {_MARKS})"
_INSERT_DUE = (
    f"INSERT INTO herald_deliveries (queue, due, since, {COLUMNS_SQL}) VALUES (?, ?, ?, {_MARKS})"
)
_NUMBER = "typeof({0}) IN ('integer', 'real')"
_IS_DUE = f"(due <= ? OR NOT {_NUMBER.format('due')})"
_SIZE = "CASE WHEN typeof(body) IN ('blob', 'text') THEN length(body) ELSE 0 END"
"""A body's size as :attr:`Claimed.size` counts it."""
_SIZED = (bytes, str)
_EXPIRED = (
    f"(lease_until < ?1 OR NOT {_NUMBER.format('lease_until')}"
    " OR consumer NOT IN (SELECT id FROM herald_consumers))"
)


@dataclass(slots=True)
class Claimed:
    """A leased row, not yet decoded: its id, the attempt it was leased as, its
    columns, and its body's size (bytes or text; 0 for anything else)."""

    seq: int
    attempt: object
    values: tuple[object, ...]
    size: int


@dataclass(frozen=True, slots=True)
class ConsumerRow:
    """A registered consumer; a malformed row reads as long dead (``heartbeat``)."""

    id: int
    pid: int
    host: str
    queues: object
    heartbeat: float

    @classmethod
    def read(cls, row: tuple[int, object, object, object, object]) -> ConsumerRow:
        cid, pid, host, queues, heartbeat = row
        if type(pid) is int and type(host) is str and isinstance(heartbeat, int | float):
            return cls(cid, pid, host, queues, float(heartbeat))
        return cls(cid, 0, "", "", float("-inf"))


class Store:
    """Operations on one connection; the caller owns the transaction."""

    def __init__(self, conn: sqlite3.Connection, path: Path, host: str) -> None:
        self.conn = conn
        self.host = host
        self.me: int | None = None
        """This broker's consumer id once registered (its own socket is not woken)."""
        self.routes = Routes(path, host)
        self.woken: set[int] = set()
        """Queues that operations made deliveries available in; the committer wakes
        their consumers after the commit and clears it."""
        self.freed: set[int] = set()
        """Exclusive queues whose holder let go: their standbys are woken."""
        self.draining: set[int] = set()
        """A hint: exclusive queues this consumer still holds after its loop stopped."""

    def rolled_back(self) -> None:
        self.woken.clear()
        self.freed.clear()
        self.routes.forget()

    def made_ready(self, qids: Iterable[int]) -> None:
        """Note queues that have new deliveries: their consumers are woken."""
        self.routes.refresh(self.conn, self.me)
        self.woken.update(qids)

    def made_free(self, qids: Iterable[int]) -> None:
        """Note exclusive queues whose holder let go: their standbys are woken."""
        self.routes.refresh(self.conn, self.me)
        self.freed.update(qids)

    # -- queues -------------------------------------------------------------------

    def declare(self, name: str, service: str, patterns: Sequence[str], owner: int | None) -> int:
        return declare_queue(self.conn, name, service, patterns, owner)

    def drop_queues(self, qids: Iterable[int]) -> None:
        drop_queues(self.conn, qids)

    # -- deliveries ---------------------------------------------------------------

    def publish(self, messages: Sequence[Encoded], now: float) -> None:
        """Insert encoded messages into every queue bound at this moment."""
        self.routes.refresh(self.conn, self.me)
        route = self.routes.route
        if self.routes.retain:
            kept = [(now, *m) for m in messages if not str(m[0]).startswith(_UNRETAINED)]
            self.conn.executemany(_RETAIN, kept)
        rows = [(qid, now, *message) for message in messages for qid in route(message[0])]
        if rows:
            self.conn.executemany(INSERT, rows)
            self.woken.update(row[0] for row in rows)

    def publish_later(self, messages: Sequence[tuple[float, Encoded]]) -> None:
        """Insert ``(due, encoded)`` messages into every queue bound at this moment,
        each not to be delivered before its due time (Unix seconds)."""
        self.routes.refresh(self.conn, self.me)
        route = self.routes.route
        rows = [(qid, due, due, *message) for due, message in messages for qid in route(message[0])]
        if rows:
            self.conn.executemany(_INSERT_DUE, rows)
            self.woken.update(row[0] for row in rows)

    def claim(
        self, qid: int, consumer: int, limit: int, budget: int, now: float, until: float
    ) -> tuple[list[Claimed], float]:
        """Lease due deliveries in publish order: up to ``limit`` of them, and more
        only while the bodies taken so far are under ``budget`` bytes. Also return
        when the next one is due: ``now`` if more may be ready, ``inf`` if none waits.

        The sizes are chosen from first (SQLite reads a blob's length from the row
        header), so only the bodies leased are read."""
        sizes = self.conn.execute(
            f"SELECT seq, {_SIZE} FROM herald_deliveries WHERE queue = ?"
            f" AND consumer IS NULL AND {_IS_DUE} ORDER BY seq LIMIT ?",
            (qid, now, limit),
        ).fetchall()
        chosen: list[int] = []
        taken = 0
        for seq, size in sizes:
            if chosen and taken >= budget:
                break
            chosen.append(seq)
            taken += size
        if not chosen:
            return [], self._next_due(qid)
        found = self.conn.execute(
            "UPDATE herald_deliveries SET consumer = ?, attempt = attempt + 1, lease_until = ?"
            " WHERE seq IN (SELECT value FROM json_each(?))"
            f" RETURNING seq, attempt, {COLUMNS_SQL}",
            (consumer, until, json.dumps(chosen)),
        ).fetchall()
        found.sort(key=itemgetter(0))
        claimed: list[Claimed] = []
        for row in found:
            body = row[-1]
            size = len(body) if type(body) in _SIZED else 0
            claimed.append(Claimed(row[0], row[1], row[2:], size))
        more = len(chosen) < len(sizes) or len(sizes) == limit
        return claimed, now if more else self._next_due(qid)

    def _next_due(self, qid: int) -> float:
        (due,) = self.conn.execute(
            "SELECT min(due) FROM herald_deliveries WHERE queue = ? AND consumer IS NULL"
            f" AND {_NUMBER.format('due')}",
            (qid,),
        ).fetchone()
        return float("inf") if due is None else float(due)

    def ack_all(self, acks: Sequence[tuple[int, int, object]]) -> None:
        """Remove each settled row ``(seq, consumer, attempt)``; a stale ack (the row
        is leased to another consumer, or again) touches nothing."""
        self.conn.executemany(
            "DELETE FROM herald_deliveries WHERE seq = ? AND consumer = ? AND attempt = ?", acks
        )
        if self.draining:
            self.let_go_drained()

    def retry(
        self, seq: int, consumer: int, attempt: object, due: float, headers: dict[str, str]
    ) -> None:
        patch = json.dumps(headers, separators=(",", ":"))
        found = self.conn.execute(
            "UPDATE herald_deliveries SET consumer = NULL, due = ?1, since = ?1, headers ="
            " CASE WHEN json_valid(headers) THEN json_patch(headers, ?2) ELSE ?2 END"
            " WHERE seq = ?3 AND consumer = ?4 AND attempt = ?5 RETURNING queue",
            (due, patch, seq, consumer, attempt),
        )
        self.made_ready(qid for (qid,) in found)
        if self.draining:
            self.let_go_drained()

    def release(self, leases: Iterable[tuple[int, object]], consumer: int, now: float) -> None:
        """Give back leased rows (``(seq, attempt)``) uncounted."""
        qids: set[int] = set()
        for seq, attempt in leases:
            qids.update(qid for (qid,) in self.conn.execute(
                "UPDATE herald_deliveries SET consumer = NULL, attempt = attempt - 1, since = ?"
                " WHERE seq = ? AND consumer = ? AND attempt = ? RETURNING queue",
                (now, seq, consumer, attempt),
            ))  # fmt: skip
        self.made_ready(qids)
        if self.draining:
            self.let_go_drained()

    def dead_letter(
        self, seq: int, consumer: int, attempt: object, service: str, stored: Message, now: float
    ) -> None:
        cur = self.conn.execute(
            "DELETE FROM herald_deliveries WHERE seq = ? AND consumer = ? AND attempt = ?",
            (seq, consumer, attempt),
        )
        if cur.rowcount == 1:
            self.conn.execute(
                f"INSERT INTO herald_dead_letters (service, stored, {COLUMNS_SQL})"
                f" VALUES (?, ?, {_MARKS})",
                (service, now, *encode_message(stored)),
            )
        if self.draining:
            self.let_go_drained()

    def renew(self, consumer: int, seqs: Sequence[int], until: float) -> None:
        """Extend the leases of the rows this consumer still holds unsettled."""
        if seqs:
            self.conn.execute(
                "UPDATE herald_deliveries SET lease_until = ? WHERE consumer = ?"
                " AND seq IN (SELECT value FROM json_each(?))",
                (until, consumer, json.dumps(list(seqs))),
            )

    def sweep_expired(self, now: float) -> int:
        """Make ready again the rows whose lease ran out, or whose holder is unknown;
        free the exclusive queues held by unknown consumers."""
        qids = [qid for (qid,) in self.conn.execute(
            "UPDATE herald_deliveries SET consumer = NULL, since = ?1 WHERE consumer IS NOT NULL"
            f" AND {_EXPIRED} RETURNING queue",
            (now,),
        )]  # fmt: skip
        if qids:
            self.made_ready(qids)
        freed = [qid for (qid,) in self.conn.execute(
            "DELETE FROM herald_holders WHERE consumer NOT IN (SELECT id FROM herald_consumers)"
            " RETURNING queue"
        )]  # fmt: skip
        if freed:
            self.made_free(freed)
        return len(qids)

    # -- exclusive queues ---------------------------------------------------------

    def hold(self, qid: int, consumer: int, turn: int, turns: Collection[int], now: float) -> bool:
        """Whether consume loop ``turn`` of ``consumer`` holds exclusive queue ``qid``,
        taking it if it is free; ``turns`` are the consumer's running loops.

        A holder keeps the queue until it lets go, or until it is forgotten. After
        a takeover, and before every claim of the holder, the rows of the queue whose
        lease ran out (or whose holder is unknown) are made ready again in the same
        transaction, so the claim that follows takes them in publish order before
        anything newer."""
        found = self.conn.execute(
            "SELECT consumer, turn FROM herald_holders WHERE queue = ?", (qid,)
        ).fetchone()
        if found is None:
            self.conn.execute(
                "INSERT INTO herald_holders (queue, consumer, turn) VALUES (?, ?, ?)",
                (qid, consumer, turn),
            )
        elif found != (consumer, turn):
            if not self._free_for(qid, consumer, turns, found[0], found[1], now):
                return False
            self.conn.execute(
                "UPDATE herald_holders SET consumer = ?, turn = ? WHERE queue = ?",
                (consumer, turn, qid),
            )
        self.conn.execute(
            "UPDATE herald_deliveries SET consumer = NULL, since = ?1"
            f" WHERE consumer IS NOT NULL AND queue = ?2 AND {_EXPIRED}",
            (now, qid),
        )
        return True

    def _free_for(
        self,
        qid: int,
        consumer: int,
        turns: Collection[int],
        holder: object,
        turn: object,
        now: float,
    ) -> bool:
        if holder == consumer:  # one of our own loops: running, or stopped
            return turn is None or turn not in turns
        known = self.conn.execute(
            "SELECT 1 FROM herald_consumers WHERE id = ?", (holder,)
        ).fetchone()
        if known is None:
            return True
        if turn is not None:
            return False
        # a holder whose loop stopped: free once its deliveries are settled or expired
        leased = self.conn.execute(
            "SELECT 1 FROM herald_deliveries WHERE consumer = ? AND queue = ?"
            f" AND lease_until >= ? AND {_NUMBER.format('lease_until')} LIMIT 1",
            (holder, qid, now),
        ).fetchone()
        return leased is None

    def let_go(self, qid: int, consumer: int, turn: int) -> None:
        """Consume loop ``turn`` stopped: the consumer keeps the queue only while it
        has deliveries of it unsettled (another loop of its own may take it now)."""
        cur = self.conn.execute(
            "UPDATE herald_holders SET turn = NULL WHERE queue = ? AND consumer = ? AND turn = ?",
            (qid, consumer, turn),
        )
        if cur.rowcount:
            self.draining.add(qid)
            self.made_free([qid])
            self.let_go_drained()

    def tidy_holds(self, consumer: int, turns: Collection[int]) -> None:
        """Let go of what loops of this consumer that are no longer running still
        hold (their own letting go failed), and of the queues it has nothing of left."""
        for qid, turn in self.conn.execute(
            "SELECT queue, turn FROM herald_holders WHERE consumer = ?", (consumer,)
        ).fetchall():
            if turn is not None and turn not in turns:
                self.let_go(qid, consumer, turn)
            elif turn is None:
                self.draining.add(qid)
        if self.draining:
            self.let_go_drained()

    def let_go_drained(self) -> None:
        """Free the queues this consumer holds after its loop stopped, once it has
        none of their deliveries left."""
        me = self.me
        if me is None:
            self.draining.clear()
            return
        freed = [qid for (qid,) in self.conn.execute(
            "DELETE FROM herald_holders WHERE consumer = ?1 AND turn IS NULL AND NOT EXISTS ("
            " SELECT 1 FROM herald_deliveries AS d"
            " WHERE d.consumer = ?1 AND d.queue = herald_holders.queue) RETURNING queue",
            (me,),
        )]  # fmt: skip
        if freed:
            self.made_free(freed)
        self.draining = {qid for (qid,) in self.conn.execute(
            "SELECT queue FROM herald_holders WHERE consumer = ? AND turn IS NULL", (me,)
        )}  # fmt: skip

    # -- consumers ----------------------------------------------------------------

    def register(
        self, pid: int, wake: str | None, now: float, cid: int | None = None, queues: str = ""
    ) -> int:
        cur = self.conn.execute(
            "INSERT OR REPLACE INTO herald_consumers (id, pid, host, wake, queues, heartbeat)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (cid, pid, self.host, wake, queues, now),
        )
        bump(self.conn)
        assert cur.lastrowid is not None
        self.me = cur.lastrowid
        return cur.lastrowid

    def set_queues(self, cid: int, queues: str) -> None:
        """Record which queues a consumer takes from (``12``) or stands by for
        (``~12``), so publishers and holders letting go wake only those concerned."""
        self.conn.execute("UPDATE herald_consumers SET queues = ? WHERE id = ?", (queues, cid))
        bump(self.conn)

    def heartbeat(self, cid: int, now: float) -> bool:
        cur = self.conn.execute(
            "UPDATE herald_consumers SET heartbeat = ? WHERE id = ?", (now, cid)
        )
        return cur.rowcount == 1

    def consumers(self) -> list[ConsumerRow]:
        return [
            ConsumerRow.read(row)
            for row in self.conn.execute(
                "SELECT id, pid, host, queues, heartbeat FROM herald_consumers"
            )
        ]

    def forget_consumer(self, cid: int, now: float, *, crashed: bool) -> int:
        """Return a consumer's leases to their queues (counting the attempt if it
        crashed), free the exclusive queues it held, drop its transient queues and its
        row; return rows reclaimed."""
        owned = [q for (q,) in self.conn.execute(
            "SELECT id FROM herald_queues WHERE owner = ?", (cid,)
        )]  # fmt: skip
        drop_queues(self.conn, owned)
        qids = [qid for (qid,) in self.conn.execute(
            "UPDATE herald_deliveries SET consumer = NULL, attempt = attempt - ?, since = ?"
            " WHERE consumer = ? RETURNING queue",
            (0 if crashed else 1, now, cid),
        )]  # fmt: skip
        freed = [q for (q,) in self.conn.execute(
            "DELETE FROM herald_holders WHERE consumer = ? RETURNING queue", (cid,)
        )]  # fmt: skip
        self.conn.execute("DELETE FROM herald_consumers WHERE id = ?", (cid,))
        bump(self.conn)
        self.made_ready(qids)
        self.made_free(freed)
        return len(qids)

    def destroy(self) -> None:
        tables = (
            "herald_deliveries",
            "herald_dead_letters",
            "herald_holders",
            "herald_queues",
            "herald_history",
        )
        for table in tables:
            self.conn.execute(f"DELETE FROM {table}")
        self.conn.execute("DELETE FROM herald_meta WHERE key LIKE 'backfill %'")
        bump(self.conn)
