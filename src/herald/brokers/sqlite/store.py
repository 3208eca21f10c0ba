"""The SQL of the SQLite broker: schema and every operation, run on one connection.

A :class:`Store` is used from a single thread (the broker's database thread) inside
transactions that :class:`~herald.brokers.sqlite_committer.Committer` opens, so its
methods never begin or commit themselves. Tables:

``herald_queues``       one row per declared queue: name, service, bound patterns and,
                        for a transient queue, the consumer that owns it.
``herald_consumers``    one row per consuming process-broker: pid, host, heartbeat,
                        the address of its wake-up socket and the queues it consumes.
``herald_deliveries``   one row per message per queue (fan-out copies), leased to a
                        consumer while in flight; ``seq`` gives publish order.
``herald_dead_letters`` dead letters per service, as ``DeadLetter.to_stored()``.
``herald_meta``         ``version``, bumped whenever queues or consumers change, so
                        publishers reload bindings only when needed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..deadletter import DeadLetter
from ..errors import BrokerError
from ..message import Message
from ..topic import matches
from .sqlite_rows import COLUMNS, MESSAGE_COLUMNS_SQL, Encoded, decode_message, encode_message

__all__ = ["SCHEMA", "ConsumerRow", "Row", "Store"]

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS herald_meta (
    key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO herald_meta (key, value) VALUES ('version', 0);
CREATE TABLE IF NOT EXISTS herald_queues (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    service TEXT NOT NULL,
    patterns TEXT NOT NULL,
    owner INTEGER);
CREATE TABLE IF NOT EXISTS herald_consumers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    wake TEXT,
    queues TEXT NOT NULL DEFAULT '',
    heartbeat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS herald_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue INTEGER NOT NULL,
    due REAL NOT NULL DEFAULT 0,
    consumer INTEGER,
    attempt INTEGER NOT NULL DEFAULT 0,{MESSAGE_COLUMNS_SQL});
CREATE INDEX IF NOT EXISTS herald_ready ON herald_deliveries (queue, consumer, seq);
CREATE INDEX IF NOT EXISTS herald_leased ON herald_deliveries (consumer)
    WHERE consumer IS NOT NULL;
CREATE TABLE IF NOT EXISTS herald_dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,{MESSAGE_COLUMNS_SQL});
CREATE INDEX IF NOT EXISTS herald_dead_by_service ON herald_dead_letters (service, seq);
CREATE INDEX IF NOT EXISTS herald_dead_by_id ON herald_dead_letters (service, id);
"""
_CHUNK = 500
_COLUMNS = ", ".join(COLUMNS)
_MARKS = ", ".join("?" * len(COLUMNS))
_INSERT = f"INSERT INTO herald_deliveries (queue, {_COLUMNS}) VALUES (?, {_MARKS})"


@dataclass(frozen=True, slots=True)
class Row:
    """A claimed delivery: its row id, how often it was leased, and the message."""

    seq: int
    attempt: int
    message: Message


@dataclass(frozen=True, slots=True)
class ConsumerRow:
    id: int
    pid: int
    host: str
    wake: str | None
    heartbeat: float


class Store:
    """Operations on one connection; the caller owns the transaction."""

    def __init__(self, conn: sqlite3.Connection, host: str) -> None:
        self.conn = conn
        self.host = host
        self.me: int | None = None
        """This broker's consumer id once registered (its own socket is not woken)."""
        self.wake_map: dict[int, tuple[str, ...]] = {}
        """Queue id -> wake-up addresses of the other consumers on this host."""
        self.woken: set[int] = set()
        """Queues that operations made deliveries available in; the committer wakes
        their consumers after the commit and clears it."""
        self._version = -1
        self._bindings: list[tuple[int, tuple[str, ...]]] = []
        self._routes: dict[str, tuple[int, ...]] = {}

    def create_schema(self) -> None:
        self.conn.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")

    # -- routing ------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload bindings and wake targets if queues or consumers changed."""
        (version,) = self.conn.execute(
            "SELECT value FROM herald_meta WHERE key = 'version'"
        ).fetchone()
        if version == self._version:
            return
        self._bindings = [
            (qid, tuple(patterns.split(" ")))
            for qid, patterns in self.conn.execute("SELECT id, patterns FROM herald_queues")
        ]
        self._routes.clear()
        wake_map: dict[int, list[str]] = {}
        for cid, wake, queues in self.conn.execute(
            "SELECT id, wake, queues FROM herald_consumers WHERE host = ? AND wake IS NOT NULL",
            (self.host,),
        ):
            if cid != self.me:
                for qid in queues.split():
                    wake_map.setdefault(int(qid), []).append(wake)
        self.wake_map = {qid: tuple(wakes) for qid, wakes in wake_map.items()}
        self._version = version

    def forget_cache(self) -> None:
        """After a rollback: what ``refresh`` read may never have been committed."""
        self._version = -1

    def _made_ready(self, qids: Iterable[int]) -> None:
        self.refresh()
        self.woken.update(qids)

    def _bump(self) -> None:
        self.conn.execute("UPDATE herald_meta SET value = value + 1 WHERE key = 'version'")

    def _route(self, event_type: str) -> tuple[int, ...]:
        route = self._routes.get(event_type)
        if route is None:
            route = tuple(
                qid
                for qid, patterns in self._bindings
                if any(matches(p, event_type) for p in patterns)
            )
            self._routes[event_type] = route
        return route

    def publish(self, messages: Sequence[Encoded]) -> None:
        """Insert encoded messages into every queue bound at this moment."""
        self.refresh()
        rows = [(qid, *message) for message in messages for qid in self._route(message[0])]
        if rows:
            self.conn.executemany(_INSERT, rows)
            self.woken.update(row[0] for row in rows)

    # -- queues -------------------------------------------------------------------

    def declare(self, name: str, service: str, patterns: Sequence[str], owner: int | None) -> int:
        found = self.conn.execute(
            "SELECT id, patterns FROM herald_queues WHERE name = ?", (name,)
        ).fetchone()
        if found is None:
            cur = self.conn.execute(
                "INSERT INTO herald_queues (name, service, patterns, owner) VALUES (?, ?, ?, ?)",
                (name, service, " ".join(patterns), owner),
            )
            self._bump()
            assert cur.lastrowid is not None
            return cur.lastrowid
        qid, bound = found
        merged = list(dict.fromkeys([*bound.split(" "), *patterns]))
        if len(merged) != len(bound.split(" ")):
            self.conn.execute(
                "UPDATE herald_queues SET patterns = ? WHERE id = ?", (" ".join(merged), qid)
            )
            self._bump()
        return int(qid)

    def drop_queues(self, qids: Iterable[int]) -> None:
        for qid in qids:
            self.conn.execute("DELETE FROM herald_deliveries WHERE queue = ?", (qid,))
            self.conn.execute("DELETE FROM herald_queues WHERE id = ?", (qid,))
            self._bump()

    # -- deliveries ---------------------------------------------------------------

    def claim(self, qid: int, consumer: int, limit: int, now: float) -> tuple[list[Row], float]:
        """Lease up to ``limit`` due deliveries in publish order. When fewer were due,
        also return when the next one falls due (``inf`` if none is waiting)."""
        found = self.conn.execute(
            "UPDATE herald_deliveries SET consumer = ?, attempt = attempt + 1 WHERE seq IN ("
            " SELECT seq FROM herald_deliveries WHERE queue = ? AND consumer IS NULL"
            f" AND due <= ? ORDER BY seq LIMIT ?) RETURNING seq, attempt, {_COLUMNS}",
            (consumer, qid, now, limit),
        ).fetchall()
        found.sort()
        rows = [Row(row[0], row[1], decode_message(row[2:])) for row in found]
        if len(rows) == limit:
            return rows, now
        (due,) = self.conn.execute(
            "SELECT min(due) FROM herald_deliveries WHERE queue = ? AND consumer IS NULL",
            (qid,),
        ).fetchone()
        return rows, float("inf") if due is None else float(due)

    def ack(self, seq: int, consumer: int) -> None:
        self.conn.execute(
            "DELETE FROM herald_deliveries WHERE seq = ? AND consumer = ?", (seq, consumer)
        )

    def retry(self, seq: int, consumer: int, due: float, headers: str) -> None:
        found = self.conn.execute(
            "UPDATE herald_deliveries SET consumer = NULL, due = ?,"
            " headers = json_patch(headers, ?) WHERE seq = ? AND consumer = ? RETURNING queue",
            (due, headers, seq, consumer),
        )
        self._made_ready(qid for (qid,) in found)

    def release(self, seqs: Iterable[int], consumer: int) -> None:
        qids: set[int] = set()
        for seq in seqs:
            qids.update(qid for (qid,) in self.conn.execute(
                "UPDATE herald_deliveries SET consumer = NULL, attempt = attempt - 1"
                " WHERE seq = ? AND consumer = ? RETURNING queue",
                (seq, consumer),
            ))  # fmt: skip
        self._made_ready(qids)

    def dead_letter(self, seq: int, consumer: int, service: str, stored: Message) -> None:
        cur = self.conn.execute(
            "DELETE FROM herald_deliveries WHERE seq = ? AND consumer = ?", (seq, consumer)
        )
        if cur.rowcount == 1:
            self.conn.execute(
                f"INSERT INTO herald_dead_letters (service, {_COLUMNS}) VALUES (?, {_MARKS})",
                (service, *encode_message(stored)),
            )

    # -- consumers ----------------------------------------------------------------

    def register(
        self,
        pid: int,
        wake: str | None,
        now: float,
        cid: int | None = None,
        queues: Iterable[int] = (),
    ) -> int:
        cur = self.conn.execute(
            "INSERT OR REPLACE INTO herald_consumers (id, pid, host, wake, queues, heartbeat)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (cid, pid, self.host, wake, " ".join(map(str, queues)), now),
        )
        self._bump()
        assert cur.lastrowid is not None
        self.me = cur.lastrowid
        return cur.lastrowid

    def set_queues(self, cid: int, qids: Iterable[int]) -> None:
        """Record which queues a consumer takes from, so publishers wake only it."""
        self.conn.execute(
            "UPDATE herald_consumers SET queues = ? WHERE id = ?",
            (" ".join(map(str, qids)), cid),
        )
        self._bump()

    def heartbeat(self, cid: int, now: float) -> bool:
        cur = self.conn.execute(
            "UPDATE herald_consumers SET heartbeat = ? WHERE id = ?", (now, cid)
        )
        return cur.rowcount == 1

    def consumers(self) -> list[ConsumerRow]:
        return [
            ConsumerRow(*row)
            for row in self.conn.execute(
                "SELECT id, pid, host, wake, heartbeat FROM herald_consumers"
            )
        ]

    def forget_consumer(self, cid: int, *, crashed: bool) -> int:
        """Return a consumer's leases to their queues (counting the attempt if it
        crashed), drop its transient queues and its row; return rows reclaimed."""
        owned = [q for (q,) in self.conn.execute(
            "SELECT id FROM herald_queues WHERE owner = ?", (cid,)
        )]  # fmt: skip
        self.drop_queues(owned)
        qids = [qid for (qid,) in self.conn.execute(
            "UPDATE herald_deliveries SET consumer = NULL, attempt = attempt - ?"
            " WHERE consumer = ? RETURNING queue",
            (0 if crashed else 1, cid),
        )]  # fmt: skip
        self.conn.execute("DELETE FROM herald_consumers WHERE id = ?", (cid,))
        self._bump()
        self._made_ready(qids)
        return len(qids)

    def sweep_orphans(self) -> int:
        """Return leases held by consumer ids that are no longer registered."""
        qids = [qid for (qid,) in self.conn.execute(
            "UPDATE herald_deliveries SET consumer = NULL WHERE consumer IS NOT NULL"
            " AND consumer NOT IN (SELECT id FROM herald_consumers) RETURNING queue"
        )]  # fmt: skip
        if qids:
            self._made_ready(qids)
        return len(qids)

    # -- dead letters -------------------------------------------------------------

    def dead_letters(self, service: str, limit: int | None) -> list[DeadLetter]:
        found = self.conn.execute(
            f"SELECT {_COLUMNS} FROM herald_dead_letters WHERE service = ? ORDER BY seq LIMIT ?",
            (service, -1 if limit is None else limit),
        )
        return [DeadLetter.from_stored(decode_message(row)) for row in found]

    def dead_letter_seqs(self, service: str, ids: Sequence[str] | None) -> list[int]:
        if ids is None:
            return [s for (s,) in self.conn.execute(
                "SELECT seq FROM herald_dead_letters WHERE service = ? ORDER BY seq", (service,)
            )]  # fmt: skip
        seqs: list[int] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            seqs.extend(s for (s,) in self.conn.execute(
                "SELECT seq FROM herald_dead_letters WHERE service = ?"
                f" AND id IN ({marks})", (service, *chunk),
            ))  # fmt: skip
        return sorted(seqs)

    def replay(self, seqs: Sequence[int]) -> int:
        """Put these dead letters back on their queues as first attempts."""
        marks = ",".join("?" * len(seqs))
        found = self.conn.execute(
            f"SELECT seq, {_COLUMNS} FROM herald_dead_letters WHERE seq IN ({marks}) ORDER BY seq",
            tuple(seqs),
        ).fetchall()
        queues: dict[str, int] = {}
        for row in found:
            letter = DeadLetter.from_stored(decode_message(row[1:]))
            name = letter.reason.queue
            if name not in queues:
                hit = self.conn.execute(
                    "SELECT id FROM herald_queues WHERE name = ?", (name,)
                ).fetchone()
                if hit is None:
                    raise BrokerError(f"queue {name!r} no longer exists; cannot replay")
                queues[name] = hit[0]
            self.conn.execute(_INSERT, (queues[name], *encode_message(letter.for_replay())))
        self.conn.executemany(
            "DELETE FROM herald_dead_letters WHERE seq = ?", [(row[0],) for row in found]
        )
        self._made_ready(queues.values())
        return len(found)

    def purge(self, seqs: Sequence[int]) -> int:
        self.conn.executemany("DELETE FROM herald_dead_letters WHERE seq = ?", [(s,) for s in seqs])
        return len(seqs)

    def destroy(self) -> None:
        for table in ("herald_deliveries", "herald_dead_letters", "herald_queues"):
            self.conn.execute(f"DELETE FROM {table}")
        self._bump()
