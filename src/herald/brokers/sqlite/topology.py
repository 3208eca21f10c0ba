"""The tables of the SQLite broker, how a file is prepared, and routing.

``herald_queues``       one row per declared queue: name, service, bound patterns and,
                        for a transient queue, the consumer that owns it.
``herald_consumers``    one row per consuming process-broker: pid, host, heartbeat,
                        the address of its wake-up socket and the queues it consumes
                        (``12``) or stands by for (``~12``: exclusive, not its turn).
``herald_holders``      per exclusive queue, the consumer holding it and the consume
                        loop (``turn``) taking deliveries; ``turn`` NULL: that loop
                        stopped and the consumer still holds deliveries of the queue.
``herald_deliveries``   one row per message per queue (fan-out copies); ``seq`` gives
                        publish order. ``due``: not before (retries); ``since``: when it
                        became ready to deliver; ``consumer`` and ``lease_until``: who
                        holds it, until when (renewed while held); ``attempt``.
``herald_dead_letters`` dead letters per service, as ``DeadLetter.to_stored()``, with
                        the time they were ``stored``.
``herald_history``      with ``retain=``: every published message once, with the time
                        it was ``stored``, for backfill; pruned after ``retain``.
``herald_meta``         ``retain`` (seconds of history kept, the ``retain=`` option last
                        given) and ``version``, bumped whenever queues or consumers change, so
                        publishers reload bindings only when needed.

The file uses incremental auto-vacuum, so the maintenance thread can give free pages
back to the file system; a file made by an older version is converted once.
``PRAGMA user_version`` is the layout version (:data:`LAYOUT`). ``herald_holders`` and
``herald_history`` are additions to layout 1 (created on open when missing), not a new
layout: a Herald that does not know them can still share the file; it cannot consume
exclusively, its publishes are not retained, and its consumers, like every
non-exclusive one, are not bound by the holders.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from ...errors import BrokerError
from ...topic import matches, validate_pattern
from .wakeup import is_wake_address
from .wire import MESSAGE_COLUMNS_SQL

__all__ = [
    "LAYOUT",
    "Routes",
    "declare_queue",
    "drop_queues",
    "listed",
    "prepare",
    "queue_ids",
    "retention",
]

LAYOUT = 1
_INCREMENTAL = 2
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS herald_meta ("
    " key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT OR IGNORE INTO herald_meta (key, value) VALUES ('version', 0)",
    "CREATE TABLE IF NOT EXISTS herald_queues ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,"
    " service TEXT NOT NULL, patterns TEXT NOT NULL, owner INTEGER)",
    "CREATE TABLE IF NOT EXISTS herald_consumers ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, pid INTEGER NOT NULL, host TEXT NOT NULL,"
    " wake TEXT, queues TEXT NOT NULL DEFAULT '', heartbeat REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS herald_deliveries ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, queue INTEGER NOT NULL,"
    " due REAL NOT NULL DEFAULT 0, consumer INTEGER, attempt INTEGER NOT NULL DEFAULT 0,"
    f" {MESSAGE_COLUMNS_SQL},"
    " since REAL NOT NULL DEFAULT 0, lease_until REAL NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS herald_ready ON herald_deliveries (queue, seq)"
    " WHERE consumer IS NULL",
    "CREATE INDEX IF NOT EXISTS herald_waiting ON herald_deliveries (queue, since)"
    " WHERE consumer IS NULL",
    "CREATE INDEX IF NOT EXISTS herald_leased ON herald_deliveries (consumer)"
    " WHERE consumer IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS herald_dead_letters ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL,"
    f" {MESSAGE_COLUMNS_SQL}, stored REAL NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS herald_dead_by_service ON herald_dead_letters (service, seq)",
    "CREATE INDEX IF NOT EXISTS herald_dead_by_id ON herald_dead_letters (service, id)",
    "CREATE INDEX IF NOT EXISTS herald_dead_by_age ON herald_dead_letters (stored)",
)
_ADDITIONS = (
    "CREATE TABLE IF NOT EXISTS herald_holders ("
    " queue INTEGER PRIMARY KEY, consumer INTEGER NOT NULL, turn INTEGER)",
    "CREATE TABLE IF NOT EXISTS herald_history ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, stored REAL NOT NULL,"
    f" {MESSAGE_COLUMNS_SQL})",
    "CREATE INDEX IF NOT EXISTS herald_history_by_age ON herald_history (stored)",
)


def prepare(
    conn: sqlite3.Connection, *, synchronous: str, lease: float, retain: float | None = None
) -> None:
    """Make the file ready: incremental auto-vacuum, WAL, the tables of :data:`LAYOUT`.

    Runs under the writer lock, so processes opening a new file at once take turns.
    """
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != _INCREMENTAL:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect at once on a new file
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != _INCREMENTAL:
            conn.execute("VACUUM")  # an existing file is rewritten once
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        layout = conn.execute("PRAGMA user_version").fetchone()[0]
        if layout > LAYOUT:
            raise BrokerError(
                f"the SQLite broker file was laid out by a newer Herald (layout {layout}); "
                f"this one reads layout {LAYOUT}"
            )
        if layout < LAYOUT:
            _upgrade(conn, time.time(), lease)
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {LAYOUT}")
        for statement in _ADDITIONS:
            conn.execute(statement)
        if retain is not None and retain != retention(conn):
            conn.execute(
                "INSERT OR REPLACE INTO herald_meta (key, value) VALUES ('retain', ?)", (retain,)
            )
            bump(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _upgrade(conn: sqlite3.Connection, now: float, lease: float) -> None:
    """Add what layout 1 has to a file of the first, unversioned layout."""
    deliveries = _columns(conn, "herald_deliveries")
    if deliveries and "since" not in deliveries:
        conn.execute("ALTER TABLE herald_deliveries ADD COLUMN since REAL NOT NULL DEFAULT 0")
        conn.execute("ALTER TABLE herald_deliveries ADD COLUMN lease_until REAL NOT NULL DEFAULT 0")
        conn.execute(
            "UPDATE herald_deliveries SET since = max(due, ?), lease_until = ?", (now, now + lease)
        )
        conn.execute("DROP INDEX IF EXISTS herald_ready")
    dead = _columns(conn, "herald_dead_letters")
    if dead and "stored" not in dead:
        conn.execute("ALTER TABLE herald_dead_letters ADD COLUMN stored REAL NOT NULL DEFAULT 0")
        conn.execute("UPDATE herald_dead_letters SET stored = ?", (now,))


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def retention(conn: sqlite3.Connection) -> float:
    """Seconds the file keeps published messages in ``herald_history`` (0: none)."""
    row = conn.execute("SELECT value FROM herald_meta WHERE key = 'retain'").fetchone()
    value = row[0] if row is not None else 0
    return float(value) if isinstance(value, int | float) and value > 0 else 0.0


def bump(conn: sqlite3.Connection) -> None:
    """Tell every process that queues or consumers changed."""
    conn.execute("UPDATE herald_meta SET value = value + 1 WHERE key = 'version'")


def declare_queue(
    conn: sqlite3.Connection, name: str, service: str, patterns: Sequence[str], owner: int | None
) -> int:
    found = conn.execute(
        "SELECT id, patterns FROM herald_queues WHERE name = ?", (name,)
    ).fetchone()
    if found is None:
        cur = conn.execute(
            "INSERT INTO herald_queues (name, service, patterns, owner) VALUES (?, ?, ?, ?)",
            (name, service, " ".join(patterns), owner),
        )
        bump(conn)
        assert cur.lastrowid is not None
        return cur.lastrowid
    qid, bound = found
    if bound == "":  # being backfilled: bound by the step that completes it
        return int(qid)
    old = str(bound).split(" ")
    merged = list(dict.fromkeys([*old, *patterns]))
    if len(merged) != len(old):
        conn.execute("UPDATE herald_queues SET patterns = ? WHERE id = ?", (" ".join(merged), qid))
        bump(conn)
    return int(qid)


def drop_queues(conn: sqlite3.Connection, qids: Iterable[int]) -> None:
    for qid in qids:
        conn.execute("DELETE FROM herald_deliveries WHERE queue = ?", (qid,))
        conn.execute("DELETE FROM herald_holders WHERE queue = ?", (qid,))
        conn.execute("DELETE FROM herald_queues WHERE id = ?", (qid,))
        conn.execute("DELETE FROM herald_meta WHERE key = ?", (f"backfill {qid}",))
        bump(conn)


class Routes:
    """Which queues an event type goes to, and whom to wake on this host; reloaded
    only when ``herald_meta.version`` changed. Rows anyone could have written are
    checked: a malformed pattern binds nothing, a wake-up address not of the form
    this broker creates is never used."""

    def __init__(self, db_path: Path, host: str) -> None:
        self._db_path = db_path
        self._host = host
        self._version: object = None
        self._bindings: list[tuple[int, tuple[str, ...]]] = []
        self._routes: dict[str, tuple[int, ...]] = {}
        self.retain = 0.0
        """Seconds published messages are kept in ``herald_history`` (0: not kept)."""
        self.wake_map: dict[int, tuple[str, ...]] = {}
        """Queue id -> wake-up addresses of the other consumers on this host taking
        deliveries from it (woken by new deliveries)."""
        self.standby_map: dict[int, tuple[str, ...]] = {}
        """Queue id -> wake-up addresses of the other consumers on this host standing
        by for it or taking from it (woken when its holder lets go)."""

    def refresh(self, conn: sqlite3.Connection, me: int | None) -> None:
        (version,) = conn.execute("SELECT value FROM herald_meta WHERE key = 'version'").fetchone()
        if version == self._version:
            return
        self._bindings = [
            (qid, bound)
            for qid, patterns in conn.execute("SELECT id, patterns FROM herald_queues")
            if (bound := _patterns(patterns))
        ]
        self._routes.clear()
        self.retain = retention(conn)
        wake_map: dict[int, list[str]] = {}
        standby_map: dict[int, list[str]] = {}
        for cid, wake, queues in conn.execute(
            "SELECT id, wake, queues FROM herald_consumers WHERE host = ? AND wake IS NOT NULL",
            (self._host,),
        ):
            if cid != me and is_wake_address(wake, self._db_path):
                taking, standing = listed(queues)
                for qid in taking:
                    wake_map.setdefault(qid, []).append(wake)
                for qid in (*taking, *standing):
                    standby_map.setdefault(qid, []).append(wake)
        self.wake_map = {qid: tuple(wakes) for qid, wakes in wake_map.items()}
        self.standby_map = {qid: tuple(wakes) for qid, wakes in standby_map.items()}
        self._version = version

    def forget(self) -> None:
        """After a rollback: what ``refresh`` read may never have been committed."""
        self._version = None

    def route(self, event_type: str) -> tuple[int, ...]:
        route = self._routes.get(event_type)
        if route is None:
            route = tuple(
                qid
                for qid, patterns in self._bindings
                if any(matches(p, event_type) for p in patterns)
            )
            self._routes[event_type] = route
        return route


def listed(text: object) -> tuple[list[int], list[int]]:
    """The queues of a consumer's ``queues`` column: those it takes from (``12``) and
    those it stands by for (``~12``); malformed parts are skipped."""
    taking: list[int] = []
    standing: list[int] = []
    if isinstance(text, str):
        for part in text.split():
            into, digits = (standing, part[1:]) if part.startswith("~") else (taking, part)
            if digits.isascii() and digits.isdigit():
                into.append(int(digits))
    return taking, standing


def queue_ids(text: object) -> list[int]:
    """Every queue of a consumer's ``queues`` column, taken from or stood by for."""
    taking, standing = listed(text)
    return [*taking, *standing]


def _patterns(text: object) -> tuple[str, ...]:
    if not isinstance(text, str):
        return ()
    valid = []
    for pattern in text.split(" "):
        try:
            validate_pattern(pattern)
        except ValueError:
            continue
        valid.append(pattern)
    return tuple(valid)
