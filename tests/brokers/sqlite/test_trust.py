"""The database file is input: anyone who can write it can put anything in any column.

Such rows must never crash a consume loop or a publisher, never be dead-lettered by
the adapter itself (the runtime does that, with the reason), and never make a
publisher send to or delete a file it did not create. The tests here write rows with
raw SQL on purpose, each time playing such a writer; they check behaviour only
through the broker's API.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from herald import Service, connect
from herald.broker import Prefetch
from herald.brokers.sqlite import SQLiteBroker
from herald.brokers.sqlite.errors import TABLE, LockTimeout
from herald.deadletter import DeadLetterReason
from herald.errors import BrokerError, DecodeError, HeaderError, MessageError
from herald.message import Message
from herald.testing import Recorder

from .helpers import SUB, connected, messages, stats, take, url_for

CORRUPTIONS: dict[str, tuple[str, type[MessageError]]] = {
    "headers not JSON": ("headers = '{not json'", DecodeError),
    "headers not an object": ("headers = '[1, 2]'", DecodeError),
    "header not a string": ("""headers = '{"x": 1}'""", DecodeError),
    "headers nested too deep": ("headers = '" + "[" * 100_000 + "'", DecodeError),
    "time": ("time = 'yesterday'", DecodeError),
    "type": ("type = 'not an event type!'", DecodeError),
    "type a blob": ("type = x'61'", DecodeError),
    "id a blob": ("id = x'00ff'", DecodeError),
    "body text": ("body = 'text, not a blob'", DecodeError),
    "source a blob": ("source = x'ff'", DecodeError),
    "attempt": ("attempt = 9223372036854775807", HeaderError),
}


def corrupt(path: Path, assignments: list[str]) -> None:
    """Another program writes the file: row n of the queue gets assignments[n]."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        seqs = [s for (s,) in conn.execute("SELECT seq FROM herald_deliveries ORDER BY seq")]
        for seq, assignment in zip(seqs, assignments, strict=False):
            conn.execute(f"UPDATE herald_deliveries SET {assignment} WHERE seq = ?", (seq,))


async def test_undecodable_rows_become_deliveries_with_an_error(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    cases = list(CORRUPTIONS.items())
    async with connected(path) as broker:
        await broker.declare(SUB)
        sent = messages(len(cases) + 1)
        await broker.publish(sent)
        corrupt(path, [assignment for _, (assignment, _) in cases])
        taken = await take(broker, len(sent))
        assert await broker.dead_letters(SUB.service) == [], "the adapter dead-letters nothing"
        for delivery, (name, (_, kind)) in zip(taken, cases, strict=False):
            assert isinstance(delivery.error, kind), f"{name}: {delivery.error!r}"
            assert delivery.attempt == 1
            await delivery.dead_letter(
                DeadLetterReason(SUB.queue, type(delivery.error).__name__, str(delivery.error), 1)
            )
        good = taken[-1]
        assert good.error is None and good.message.id == sent[-1].id
        await good.ack()
        letters = await broker.dead_letters(SUB.service)
        assert [letter.reason.error_type for letter in letters] == [
            kind.__name__ for _, (_, kind) in cases
        ]
        by_case = dict(zip(CORRUPTIONS, letters, strict=True))
        assert by_case["time"].message.body == sent[4].body, "the body is kept as it was"
        assert by_case["type"].message.type == "herald.undecodable"
        assert by_case["headers not JSON"].message.type == "invoice.created"
        assert by_case["body text"].message.body == b"text, not a blob"
        found = await stats(broker)
        assert (found.depth, found.in_flight) == (0, 0)


async def test_the_runtime_dead_letters_undecodable_rows_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    service = Service("billing")
    seen: Recorder[bytes] = Recorder()

    @service.on("invoice.created")
    async def handle(message: Message) -> None:
        seen.add(message.body)

    async with connect(url_for(path)) as bus:
        await bus.broker.declare(service.handlers[0].subscription)
        await bus.broker.publish(messages(3))
        corrupt(path, ["headers = '{not json'", "time = 'yesterday'"])
        worker = await bus.start(service)
        assert await seen.wait_for(1) == [messages(3)[2].body]
        for _ in range(200):
            letters = await bus.dead_letters(service.name)
            if len(letters) == 2:
                break
            await asyncio.sleep(0.05)
        assert [letter.reason.error_type for letter in letters] == ["DecodeError"] * 2
        assert [letter.reason.attempts for letter in letters] == [1, 1]
        await worker.stop()


async def test_rows_with_poisoned_bookkeeping_are_still_delivered(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with connected(path, lease=1) as broker:
        await broker.declare(SUB)
        await broker.publish(messages(3))
        corrupt(
            path,
            [
                "due = 'tomorrow'",  # not a time: taken as due now
                "consumer = 4242, attempt = 1",  # leased to a consumer nobody knows
                "consumer = 4242, attempt = 1, lease_until = 'never'",
            ],
        )
        taken = await take(broker, 3)
        assert sorted((d.message.body, d.attempt) for d in taken) == sorted(
            [(messages(3)[0].body, 1), (messages(3)[1].body, 2), (messages(3)[2].body, 2)]
        )
        assert all(d.error is None for d in taken)


async def test_malformed_queue_and_consumer_rows_do_not_stop_publishing(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with connected(path) as broker:
        await broker.declare(SUB)
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute(
                "INSERT INTO herald_queues (name, service, patterns) VALUES ('x.y', 'x', 42)"
            )
            conn.execute(
                "INSERT INTO herald_consumers (pid, host, wake, queues, heartbeat)"
                " VALUES ('pid', 7, 8, 'a 1 -3 99999999999999999999', 'now')"
            )
            conn.execute(
                "INSERT INTO herald_consumers (pid, host, wake, queues, heartbeat)"
                " VALUES (-1, 'far', NULL, '1', 1e300)"
            )
        async with connected(path) as publisher:
            await publisher.publish(messages(2))
        (delivery, _) = await take(broker, 2)
        assert delivery.error is None
        names = [found.queue for found in await broker.inspect_queues()]
        assert names == [SUB.queue, "x.y"]


async def test_a_forged_wake_up_address_never_makes_a_publisher_delete_a_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.db"
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    stale = tmp_path / "stale.sock"  # a socket file nobody listens on any more
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(stale))
    lookalike = Path(f"{path}.wake") / "0123456789abcdef"
    lookalike.parent.mkdir()
    lookalike.write_text("not a socket")
    forged = [str(precious), str(stale), str(lookalike), "@not-herald", "@herald-../../x"]
    async with connected(path) as consumer:
        await consumer.declare(SUB)
        stream = consumer.consume(SUB, Prefetch())
        pending = asyncio.ensure_future(anext(stream))
        for _ in range(100):
            if (await stats(consumer)).consumers == 1:
                break
            await asyncio.sleep(0.05)
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            for address in forged:  # rows like the live consumer's, with these addresses
                conn.execute(
                    "INSERT INTO herald_consumers (pid, host, wake, queues, heartbeat)"
                    " SELECT pid, host, ?, queues, ? FROM herald_consumers LIMIT 1",
                    (address, time.time() + 3600),
                )
        async with connected(path) as publisher:
            await publisher.publish(messages(3))
        delivery = await asyncio.wait_for(pending, 10)
        assert delivery.error is None, "the real consumer was still woken"
        await stream.aclose()
    assert precious.read_text() == "keep me"
    assert stale.exists()
    assert lookalike.read_text() == "not a socket"


@pytest.mark.parametrize(
    ("error", "kind", "text"),
    [
        (sqlite3.OperationalError("database is locked"), BrokerError, "database is locked"),
        (sqlite3.DatabaseError("file is not a database"), BrokerError, "not a database"),
        (LockTimeout("/srv/h.db.lock", 5), BrokerError, "/srv/h.db.lock"),
        (PermissionError(13, "Permission denied"), BrokerError, "Permission denied"),
        (ValueError("odd"), BrokerError, "odd"),
    ],
)
def test_the_error_table(error: Exception, kind: type[Exception], text: str) -> None:
    converted = TABLE.convert(error, "doing X")
    assert type(converted) is kind
    assert text in str(converted) and str(converted).startswith("doing X failed")


async def test_a_file_that_is_not_a_database_is_a_broker_error(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    path.write_bytes(b"definitely not SQLite" * 100)
    broker = SQLiteBroker(path)
    with pytest.raises(BrokerError, match="not a database"):
        await broker.connect()
