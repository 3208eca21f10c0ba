"""A message as a row: one column per CloudEvents attribute, extension headers as
JSON, the body as a blob — readable with any SQLite client, and cheap to decode."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..message import Message, parse_time

__all__ = ["COLUMNS", "MESSAGE_COLUMNS_SQL", "Encoded", "decode_message", "encode_message"]

COLUMNS = (
    "type", "id", "source", "subject", "time", "datacontenttype", "specversion", "headers", "body",
)  # fmt: skip
MESSAGE_COLUMNS_SQL = """
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    source TEXT NOT NULL,
    subject TEXT,
    time TEXT NOT NULL,
    datacontenttype TEXT NOT NULL,
    specversion TEXT NOT NULL,
    headers TEXT NOT NULL DEFAULT '{}',
    body BLOB NOT NULL"""
Encoded = tuple[str, str, str, str | None, str, str, str, str, bytes]
"""The values of :data:`COLUMNS` for one message; ``[0]`` is its type."""


def encode_message(message: Message) -> Encoded:
    headers = json.dumps(dict(message.headers), separators=(",", ":")) if message.headers else "{}"
    return (
        message.type,
        message.id,
        message.source,
        message.subject,
        message.time.isoformat(),
        message.datacontenttype,
        message.specversion,
        headers,
        message.body,
    )


def decode_message(values: tuple[Any, ...] | list[Any]) -> Message:
    """The message from the values of :data:`COLUMNS`, in that order."""
    event_type, id_, source, subject, time, content_type, version, headers, body = values
    try:
        when = datetime.fromisoformat(time)
    except ValueError:
        when = parse_time(time)
    return Message(
        type=event_type,
        body=bytes(body),
        id=id_,
        source=source,
        subject=subject,
        time=when,
        datacontenttype=content_type,
        specversion=version,
        headers=json.loads(headers) if headers != "{}" else {},
    )
