"""The envelope every broker carries: CloudEvents 1.0 attributes, headers and body."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

__all__ = ["Message", "new_message_id"]

_EMPTY: Mapping[str, str] = MappingProxyType({})


_RANDOM_HEX = 8192
"""Hex digits of random bytes drawn at once (20 a message id)."""
_entropy = ""
_left = 0


def _forget_entropy() -> None:
    global _left
    _left = 0  # a forked child must not reuse its parent's random bytes


os.register_at_fork(after_in_child=_forget_entropy)


def new_message_id() -> str:
    """A unique, roughly time-ordered id (48-bit millisecond time + 80 random bits), hex.

    Random bytes come from ``os.urandom`` in blocks, not one system call per id.
    """
    global _entropy, _left
    if _left < 20:
        _entropy, _left = os.urandom(_RANDOM_HEX // 2).hex(), _RANDOM_HEX
    _left -= 20
    return f"{time.time_ns() // 1_000_000:012x}{_entropy[_left : _left + 20]}"


@dataclass(frozen=True, slots=True)
class Message:
    """An immutable event envelope.

    The attributes are those of CloudEvents 1.0: ``id``, ``source``, ``type``,
    ``subject`` (Herald's ordering key), ``time`` and ``datacontenttype``.
    ``headers`` holds extension attributes and transport metadata (string values);
    ``body`` is the encoded event.

    >>> m = Message(type="employee.created", body=b'{"guid": "g1"}', subject="g1")
    >>> m.type, m.subject, m.datacontenttype
    ('employee.created', 'g1', 'application/json')
    >>> m.with_headers({"x-trace": "abc"}).headers["x-trace"]
    'abc'
    """

    type: str
    body: bytes
    id: str = field(default_factory=new_message_id)
    source: str = "herald"
    subject: str | None = None
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    datacontenttype: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    specversion: str = "1.0"

    def __post_init__(self) -> None:
        if not self.type:
            raise ValueError("Message.type must not be empty")
        body = self.body
        if type(body) is not bytes:
            if not isinstance(body, bytes | bytearray | memoryview):
                raise TypeError(f"Message.body must be bytes, not {type(body).__name__}")
            object.__setattr__(self, "body", bytes(body))
        if self.subject == "":
            object.__setattr__(self, "subject", None)  # an empty key is no key
        headers = self.headers
        if type(headers) is not MappingProxyType:
            frozen = MappingProxyType(dict(headers)) if headers else _EMPTY
            object.__setattr__(self, "headers", frozen)

    @property
    def key(self) -> str | None:
        """The ordering key (the CloudEvents ``subject``)."""
        return self.subject

    def with_headers(self, headers: Mapping[str, str]) -> Message:
        """A copy with ``headers`` merged over the current ones."""
        return replace(self, headers={**self.headers, **headers})

    def without_headers(self, prefix: str) -> Message:
        """A copy without the headers whose name starts with ``prefix``."""
        return replace(
            self, headers={k: v for k, v in self.headers.items() if not k.startswith(prefix)}
        )

    def attributes(self) -> dict[str, str]:
        """The CloudEvents context attributes as strings (no data)."""
        attrs = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time.isoformat(),
            "datacontenttype": self.datacontenttype,
        }
        if self.subject is not None:
            attrs["subject"] = self.subject
        return attrs

    @classmethod
    def from_attributes(
        cls, attrs: Mapping[str, Any], body: bytes, headers: Mapping[str, str] | None = None
    ) -> Message:
        """Rebuild a message from :meth:`attributes` output (missing ones get defaults)."""
        kwargs: dict[str, Any] = {"type": str(attrs["type"]), "body": body}
        for name in ("id", "source", "subject", "datacontenttype", "specversion"):
            value = attrs.get(name)
            if value is not None and value != "":
                kwargs[name] = str(value)
        raw_time = attrs.get("time")
        if isinstance(raw_time, datetime):
            kwargs["time"] = raw_time
        elif raw_time:
            kwargs["time"] = parse_time(str(raw_time))
        if headers:
            kwargs["headers"] = headers
        return cls(**kwargs)


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp; naive values are taken as UTC."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
