"""The client's command packing: hiredis's, with buffers copied only when present."""

from __future__ import annotations

import pytest
from redis.connection import Encoder, PythonRespSerializer
from redis.exceptions import DataError

from herald.brokers.redis import connection


def _python_packed(*args: object) -> bytes:
    packed = PythonRespSerializer(1 << 20, Encoder("utf-8", "strict", False).encode).pack(*args)
    return b"".join(packed)


def test_packing_matches_redis_py_for_every_argument_type() -> None:
    assert connection.HIREDIS, "hiredis is a dependency: its packing is what runs"
    args = ("EVALSHA", "abc", 2, 1.5, b"\x00body", bytearray(b"ba"), memoryview(b"mv"))
    expected = _python_packed("EVALSHA", "abc", 2, 1.5, b"\x00body", b"ba", b"mv")
    assert connection._pack(args) == [expected]
    assert connection._pack(("CLIENT SETNAME", "x")) == [_python_packed("CLIENT", "SETNAME", "x")]


def test_an_argument_of_another_type_is_a_data_error() -> None:
    with pytest.raises(DataError):
        connection._pack(("SET", "k", object()))
