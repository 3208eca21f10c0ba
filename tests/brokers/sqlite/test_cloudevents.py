"""CloudEvents in the SQLite file (no official binding: one column per attribute,
named as the attribute): a row read with sqlite3 and checked with the SDK; a
structured event another program inserts reaches a Herald handler."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from cloudevents.core.bindings import http
from cloudevents.core.v1.event import CloudEvent
from dateutil.parser import isoparse

import herald
from herald.broker import Subscription

from ..ce_support import (
    BAD_VERSION,
    EVENT_TYPE,
    FORMAT,
    GOOD,
    assert_is_sent,
    assert_required_on_wire,
    handled_and_dead_lettered,
    sent_message,
    structured_body,
)
from .helpers import connected, url_for

COLUMNS = "type, id, source, subject, time, datacontenttype, specversion, headers, body"


async def test_herald_writes_one_column_per_attribute(tmp_path: Path) -> None:
    path = tmp_path / "ce.db"
    sent = sent_message()
    async with connected(path) as broker:
        await broker.declare(Subscription("cewire", EVENT_TYPE))
        await broker.publish([sent])
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (row,) = conn.execute(f"SELECT {COLUMNS} FROM herald_deliveries").fetchall()
    named = zip(COLUMNS.split(", "), row, strict=True)
    attributes = {name: value for name, value in named if value not in (None, "")}
    assert_required_on_wire(attributes, "")
    assert json.loads(attributes.pop("headers")) == {"x-trace": "t1"}
    body = attributes.pop("body")
    attributes["time"] = isoparse(attributes["time"])
    event = CloudEvent(attributes, FORMAT.read_data(body, attributes["datacontenttype"]))
    assert_is_sent(event, sent)


async def test_structured_events_reach_a_handler_and_malformed_ones_are_dead_lettered(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ce.db"
    content_type = http.to_structured(GOOD, FORMAT).headers["content-type"]

    async def inject(bus: herald.Bus, queue: str) -> None:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            (qid,) = conn.execute(
                "SELECT id FROM herald_queues WHERE name = ?", (queue,)
            ).fetchone()
            for body in (FORMAT.write(GOOD), structured_body(BAD_VERSION)):
                conn.execute(
                    f"INSERT INTO herald_deliveries (queue, since, {COLUMNS})"
                    " VALUES (?, 0, ?, '', '', NULL, '2026-01-01T00:00:00+00:00', ?, '', '{}', ?)",
                    (qid, EVENT_TYPE, content_type, body),
                )

    await handled_and_dead_lettered(url_for(path, poll=0.1), inject)
