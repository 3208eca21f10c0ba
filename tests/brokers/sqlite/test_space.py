"""The file over time: it shrinks after a backlog is consumed, files of the first
layout are upgraded in place, and dead letters are kept ``dlq_retention`` seconds."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from herald.brokers.sqlite import SQLiteBroker
from herald.deadletter import DeadLetterReason
from herald.errors import BrokerError
from herald.message import Message
from herald.testing import eventually

from .helpers import SUB, connected, messages, settles_on, stats, take

MiB = 1024 * 1024
FIRST_LAYOUT = """
CREATE TABLE herald_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO herald_meta (key, value) VALUES ('version', 1);
CREATE TABLE herald_queues (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
    service TEXT NOT NULL, patterns TEXT NOT NULL, owner INTEGER);
CREATE TABLE herald_consumers (id INTEGER PRIMARY KEY AUTOINCREMENT, pid INTEGER NOT NULL,
    host TEXT NOT NULL, wake TEXT, queues TEXT NOT NULL DEFAULT '', heartbeat REAL NOT NULL);
CREATE TABLE herald_deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue INTEGER NOT NULL, due REAL NOT NULL DEFAULT 0, consumer INTEGER,
    attempt INTEGER NOT NULL DEFAULT 0, type TEXT NOT NULL, id TEXT NOT NULL,
    source TEXT NOT NULL, subject TEXT, time TEXT NOT NULL, datacontenttype TEXT NOT NULL,
    specversion TEXT NOT NULL, headers TEXT NOT NULL DEFAULT '{}', body BLOB NOT NULL);
CREATE INDEX herald_ready ON herald_deliveries (queue, consumer, seq);
CREATE INDEX herald_leased ON herald_deliveries (consumer) WHERE consumer IS NOT NULL;
CREATE TABLE herald_dead_letters (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
    source TEXT NOT NULL, subject TEXT, time TEXT NOT NULL, datacontenttype TEXT NOT NULL,
    specversion TEXT NOT NULL, headers TEXT NOT NULL DEFAULT '{}', body BLOB NOT NULL);
CREATE INDEX herald_dead_by_service ON herald_dead_letters (service, seq);
CREATE INDEX herald_dead_by_id ON herald_dead_letters (service, id);
INSERT INTO herald_queues (name, service, patterns) VALUES ('billing.invoice.created',
    'billing', 'invoice.*');
INSERT INTO herald_deliveries (queue, type, id, source, time, datacontenttype, specversion,
    body) VALUES (1, 'invoice.created', 'm-waiting', 'old', '2026-01-02T03:04:05+00:00',
    'application/json', '1.0', x'7b7d');
INSERT INTO herald_dead_letters (service, type, id, source, time, datacontenttype,
    specversion, headers, body) VALUES ('billing', 'invoice.created', 'm-dead', 'old',
    '2026-01-02T03:04:05+00:00', 'application/json', '1.0',
    '{"herald-dl-queue":"billing.invoice.created","herald-dl-error-type":"KeyError"}', x'7b7d');
"""
"""A file as the first, unversioned layout left it (1d52aaf's Herald), with a waiting
message and a dead letter. Written with raw SQL: no code of that layout is left."""


def write_first_layout(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(FIRST_LAYOUT)


@pytest.mark.parametrize("start", ["new", "first-layout"])
async def test_the_file_shrinks_after_a_backlog_is_consumed(tmp_path: Path, start: str) -> None:
    path = tmp_path / "h.db"
    if start == "first-layout":
        write_first_layout(path)  # not incremental-vacuum: converted once on open
    async with connected(path, lease=5) as broker:
        await broker.declare(SUB)
        for _ in range(10):
            await broker.publish(messages(40, size=64 * 1024))  # 26 MB
        backlog = 400 + (start == "first-layout")
        for delivery in await take(broker, backlog, prefetch=backlog):
            await delivery.ack()
        assert (await stats(broker)).depth == 0
        # the log is checkpointed into the file, which grows to hold every page...
        await eventually(lambda: path.stat().st_size > 10 * MiB, what="the file to grow")
        # ...then gives the free ones back, and truncates its log once idle
        wal = path.with_name(path.name + "-wal")
        await eventually(
            lambda: path.stat().st_size < 3 * MiB and wal.stat().st_size < MiB,
            timeout=30,
            what="the file and its log to shrink",
        )


async def test_a_first_layout_file_is_upgraded_and_keeps_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    write_first_layout(path)
    async with connected(path) as broker:
        found = await stats(broker)
        assert (found.depth, found.in_flight) == (1, 0)
        (letter,) = await broker.dead_letters(SUB.service)
        assert (letter.message.id, letter.reason.error_type) == ("m-dead", "KeyError")
        (delivery,) = await take(broker, 1)
        assert (delivery.message.id, delivery.attempt, delivery.error) == ("m-waiting", 1, None)
        await delivery.ack()
        assert await broker.replay_dead_letters(SUB.service) == 1
        (replayed,) = await take(broker, 1)
        assert replayed.message.id == "m-dead"
    async with connected(path) as again:  # upgraded once; opening again changes nothing
        assert (await stats(again)).in_flight == 0


async def test_a_file_of_a_newer_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with connected(path):
        pass
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA user_version = 99")  # a future Herald's file
    with pytest.raises(BrokerError, match="newer Herald"):
        async with connected(path):
            pass


async def dead_letter_one(path: Path, **options: object) -> Message:
    async with connected(path, **options) as broker:
        await broker.declare(SUB)
        await broker.publish(messages(1))
        (delivery,) = await take(broker, 1)
        await delivery.dead_letter(DeadLetterReason(SUB.queue, "E", "boom", 1))
        return delivery.message


async def test_dead_letters_are_deleted_after_dlq_retention(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with connected(path, dlq_retention=2) as short, connected(path, dlq_retention=0) as ever:
        await short.declare(SUB)
        await short.publish(messages(1))
        (delivery,) = await take(short, 1)
        await delivery.dead_letter(DeadLetterReason(SUB.queue, "E", "boom", 1))
        assert len(await ever.dead_letters(SUB.service)) == 1
        # gone for the broker that keeps them 2s, and deleted from the file: the
        # broker that keeps dead letters for ever does not see it either
        await settles_on(lambda: _count(short), 0)
        await settles_on(lambda: _count(ever), 0)


async def test_dlq_retention_zero_keeps_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    sent = await dead_letter_one(path, dlq_retention=0)
    async with connected(path, dlq_retention=0) as broker:
        await asyncio.sleep(1.5)  # several maintenance rounds
        (letter,) = await broker.dead_letters(SUB.service)
        assert letter.message.id == sent.id


async def _count(broker: SQLiteBroker) -> int:
    return len(await broker.dead_letters(SUB.service))
