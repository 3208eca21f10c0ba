"""``RetainedHistory`` on SQLite: a new queue starts with the retained messages.

With retention on (``retain=``, the file's setting), every published message is also
stored once in ``herald_history``. :func:`backfill_step` gives a new queue what it
missed, a step (one transaction) at a time, so that a long history never holds the
writer lock for long:

- the first step creates the queue *unbound* (patterns ``''``: nothing is routed to
  it) and records its progress, the last history ``seq`` copied, in ``herald_meta``
  (``backfill <queue id>``);
- each step copies up to :data:`STEP` history rows past the progress that the
  queue's patterns match (stored at or after ``since``, within ``retain``), in
  ``seq`` order, and moves the progress on;
- the step that reaches the end of the history binds the queue and deletes the
  progress, in the same transaction: every publish commits before it (in the
  history, copied) or after it (routed to the queue), so each message lands once.

A queue without progress is complete: a restart or another replica only declares
it. Replicas backfilling at once share the steps (each reads and moves the progress
in its transaction), and a start after a crash carries on from the progress.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...topic import matches
from .store import COLUMNS_SQL, Store
from .topology import bump, declare_queue

__all__ = ["STEP", "backfill_step"]

STEP = 10_000
"""History rows one step reads (about 0.1 s of writer lock)."""
NOT_RETAINED = -1


def backfill_step(
    store: Store,
    name: str,
    service: str,
    patterns: Sequence[str],
    since: float,
    now: float,
    step: int = STEP,
) -> tuple[int, bool]:
    """One step of backfilling queue ``name``: how many messages it copied, and
    whether the queue is complete (bound). ``(-1, True)``: the file retains nothing
    (nothing was declared)."""
    conn = store.conn
    store.routes.refresh(conn, store.me)
    retain = store.routes.retain
    if not retain:
        return NOT_RETAINED, True
    row = conn.execute("SELECT id FROM herald_queues WHERE name = ?", (name,)).fetchone()
    if row is None:
        cur = conn.execute(
            "INSERT INTO herald_queues (name, service, patterns) VALUES (?, ?, '')",
            (name, service),
        )
        assert cur.lastrowid is not None
        qid, progress = cur.lastrowid, 0
    else:
        qid = int(row[0])
        found = conn.execute("SELECT value FROM herald_meta WHERE key = ?", (_key(qid),))
        kept = found.fetchone()
        if kept is None:  # complete, or never backfilled
            declare_queue(conn, name, service, patterns, None)
            return 0, True
        progress = int(kept[0])
    rows = conn.execute(
        "SELECT seq, type FROM herald_history WHERE seq > ? ORDER BY seq LIMIT ?",
        (progress, step + 1),
    ).fetchall()
    done = len(rows) <= step
    taken = rows[:step]
    last = int(taken[-1][0]) if taken else progress
    types = {kind for _, kind in taken if isinstance(kind, str)}
    wanted = [kind for kind in types if any(matches(p, kind) for p in patterns)]
    copied = 0
    if wanted:
        cur = conn.execute(
            f"INSERT INTO herald_deliveries (queue, since, {COLUMNS_SQL})"
            f" SELECT ?, ?, {COLUMNS_SQL} FROM herald_history"
            f" WHERE seq > ? AND seq <= ? AND stored >= ?"
            f" AND type IN ({', '.join('?' * len(wanted))}) ORDER BY seq",
            (qid, now, progress, last, max(since, now - retain), *wanted),
        )
        copied = int(cur.rowcount)
        if copied:
            store.made_ready([qid])
    if done:
        conn.execute("DELETE FROM herald_meta WHERE key = ?", (_key(qid),))
        conn.execute(
            "UPDATE herald_queues SET patterns = ? WHERE id = ?", (" ".join(patterns), qid)
        )
        bump(conn)
    else:
        conn.execute(
            "INSERT OR REPLACE INTO herald_meta (key, value) VALUES (?, ?)", (_key(qid), last)
        )
    return copied, done


def _key(qid: int) -> str:
    return f"backfill {qid}"
