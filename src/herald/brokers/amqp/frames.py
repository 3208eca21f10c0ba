"""The wire bytes of a ``basic.publish``: method, content header and body frames.

pamqp encodes a message by walking every property and header value through its
generic type dispatch, which costs more than everything else a publish does. Here the
properties Herald sets (short strings, a table of string, integer and boolean values,
octets, a timestamp) are packed directly, producing the same bytes pamqp produces
(header keys sorted, integers in the smallest signed type, ...). Anything else (a
table value of another type, a key or string too long) returns None, and the caller
marshals that message with pamqp, which also raises its errors.

>>> props = spec.Basic.Properties(delivery_mode=2, headers={"b": "x", "a": 7})
>>> data = publish_frames(1, "events", "a.b", b"{}", props, 131072)
>>> data[:7], data[-10:]  # a method frame on channel 1 ... a body frame
(b'\\x01\\x00\\x01\\x00\\x00\\x00\\x12', b'\\x03\\x00\\x01\\x00\\x00\\x00\\x02{}\\xce')
>>> publish_frames(1, "events", "a.b", b"{}", spec.Basic.Properties(headers={"f": 1.5}), 99)
"""

from __future__ import annotations

import datetime
import functools
import struct
from typing import Any

from pamqp import commands as spec
from pamqp import constants

__all__ = ["publish_frames"]

_FRAME = struct.Struct(">BHI")
_PUBLISH = struct.Struct(">IH").pack(spec.Basic.Publish.index, 0)
_HEADER = struct.Struct(">HxxQH")
_LONG = struct.Struct(">I")
_BYTE = struct.Struct(">b")
_SHORT_INT = struct.Struct(">h")
_LONG_LONG = struct.Struct(">q")
_TIMESTAMP = struct.Struct(">Q")
_END = constants.FRAME_END_CHAR
_METHOD, _CONTENT_HEADER, _BODY = (
    constants.FRAME_METHOD,
    constants.FRAME_HEADER,
    constants.FRAME_BODY,
)
_FLAGS = spec.Basic.Properties.flags
_TYPES = [
    (name, _FLAGS[name], getattr(spec.Basic.Properties, f"_{name}"))
    for name in spec.Basic.Properties.__slots__
]
_UTC = datetime.UTC


class _Unsupported(Exception):
    """A value this module does not encode: pamqp marshals the message."""


def publish_frames(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: spec.Basic.Properties,
    max_body: int,
) -> bytes | None:
    """The frames of one publish on ``channel`` (bodies split at ``max_body`` bytes),
    or None where pamqp must marshal it."""
    if not _valid_exchange(exchange):
        return None
    try:
        method = _PUBLISH + _short(exchange) + _short(routing_key) + b"\x00"
        flags, encoded = _properties(properties)
    except _Unsupported:
        return None
    header = _HEADER.pack(spec.Basic.frame_id, len(body), flags) + encoded
    parts = [
        _FRAME.pack(_METHOD, channel, len(method)),
        method,
        _END,
        _FRAME.pack(_CONTENT_HEADER, channel, len(header)),
        header,
        _END,
    ]
    for offset in range(0, len(body), max_body):
        chunk = body[offset : offset + max_body]
        parts += (_FRAME.pack(_BODY, channel, len(chunk)), chunk, _END)
    return b"".join(parts)


@functools.lru_cache(maxsize=64)
def _valid_exchange(name: str) -> bool:
    """What ``Basic.Publish.validate`` accepts."""
    try:
        spec.Basic.Publish(exchange=name)
    except ValueError:
        return False
    return True


def _properties(properties: spec.Basic.Properties) -> tuple[int, bytes]:
    flags = 0
    parts: list[bytes] = []
    for name, flag, kind in _TYPES:
        value = getattr(properties, name)
        if value is None or value == "":
            continue
        flags |= flag
        if kind == "shortstr":
            parts.append(_short(value))
        elif kind == "table":
            parts.append(_table(value))
        elif kind == "octet":
            if type(value) is not int or not 0 <= value <= 255:
                raise _Unsupported
            parts.append(bytes((value,)))
        elif kind == "timestamp":
            parts.append(_timestamp(value))
        else:
            raise _Unsupported
    if flags & 0xFFFF != flags or flags & 1:
        raise _Unsupported
    return flags, b"".join(parts)


def _short(value: Any) -> bytes:
    if type(value) is not str:
        raise _Unsupported
    data = value.encode()
    if len(data) > 255:
        raise _Unsupported
    return bytes((len(data),)) + data


def _table(value: Any) -> bytes:
    if type(value) is not dict:
        raise _Unsupported
    parts: list[bytes] = []
    for key, item in sorted(value.items()):
        parts.append(_key(key))
        kind = type(item)
        if kind is str:
            data = item.encode()
            parts += (b"S", _LONG.pack(len(data)), data)
        elif kind is bool:
            parts.append(b"t\x01" if item else b"t\x00")
        elif kind is int:
            parts.append(_integer(item))
        else:
            raise _Unsupported
    data = b"".join(parts)
    return _LONG.pack(len(data)) + data


def _key(key: Any) -> bytes:
    if type(key) is not str:
        raise _Unsupported
    data = key.encode()
    if len(data) > 128:
        raise _Unsupported  # pamqp truncates it, with a warning
    return bytes((len(data),)) + data


def _integer(value: int) -> bytes:
    if -128 <= value <= 127:
        return b"b" + _BYTE.pack(value)
    if -32768 <= value <= 32767:
        return b"s" + _SHORT_INT.pack(value)
    if -(2**31) <= value < 2**32 or not -(2**63) <= value < 2**63:
        raise _Unsupported  # their type depends on pamqp's DEPRECATED_RABBITMQ_SUPPORT
    return b"l" + _LONG_LONG.pack(value)


def _timestamp(value: Any) -> bytes:
    if type(value) is not datetime.datetime:
        raise _Unsupported
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        value = value.replace(tzinfo=_UTC)
    return _TIMESTAMP.pack(int(value.timestamp()))
