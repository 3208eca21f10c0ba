"""Messages as Redis stream entry fields, and the key names of a namespace.

An entry holds the CloudEvents attributes as ``cloudEvents_*`` fields (the names of
:mod:`herald.wire`), the message's own headers as fields, the body in ``body`` and,
on a retried copy, ``herald-attempt``: the attempts already made. Both names are
reserved; a header called ``body`` or ``herald-attempt`` is not carried.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import DecodeError
from ..message import Message
from ..wire import decode_message, encode_headers

__all__ = ["ATTEMPT_FIELD", "BODY_FIELD", "Keys", "decode_fields", "encode_fields", "salvage"]

BODY_FIELD = "body"
ATTEMPT_FIELD = "herald-attempt"
_RESERVED = (BODY_FIELD.encode(), ATTEMPT_FIELD.encode())


@dataclass(frozen=True, slots=True)
class Keys:
    """Every key the broker uses, under ``<namespace>:herald:``."""

    prefix: str

    @classmethod
    def for_namespace(cls, namespace: str) -> Keys:
        return cls(f"{namespace}:herald:" if namespace else "herald:")

    @property
    def bindings(self) -> str:
        return f"{self.prefix}bindings"

    @property
    def version(self) -> str:
        return f"{self.prefix}bindings:version"

    @property
    def delayed(self) -> str:
        return f"{self.prefix}delayed"

    def queue(self, queue: str) -> str:
        return f"{self.prefix}q:{queue}"

    def dead_letters(self, service: str) -> str:
        return f"{self.prefix}dlq:{service}"


def encode_fields(message: Message) -> list[bytes | str]:
    """Flat ``[name, value, ...]`` fields for XADD (or a script's arguments)."""
    fields: list[bytes | str] = []
    for name, value in encode_headers(message).items():
        if name not in (BODY_FIELD, ATTEMPT_FIELD):
            fields += (name, value)
    fields += (BODY_FIELD, message.body)
    return fields


def decode_fields(fields: Mapping[bytes, bytes]) -> tuple[Message, int]:
    """The message in an entry and the attempts made before it (``herald-attempt``)."""
    try:
        headers = {k.decode(): v for k, v in fields.items() if k not in _RESERVED}
        previous = int(fields.get(_RESERVED[1], b"0"))
    except ValueError as exc:  # UnicodeDecodeError too
        raise DecodeError(f"invalid entry fields: {exc}") from exc
    try:
        message = decode_message(headers, fields.get(_RESERVED[0], b""))
    except UnicodeDecodeError as exc:
        raise DecodeError(f"entry fields are not UTF-8: {exc}") from exc
    return message, previous


def salvage(fields: Mapping[bytes, bytes], fallback_type: str) -> Message:
    """Best-effort message from an entry :func:`decode_fields` rejected (for dead letters)."""
    headers = {
        k.decode(errors="replace"): v.decode(errors="replace")
        for k, v in fields.items()
        if k not in _RESERVED
    }
    body = fields.get(_RESERVED[0], b"")
    try:
        return decode_message(headers, body, default_type=fallback_type)
    except DecodeError:
        kept = {k: v for k, v in headers.items() if not k.startswith("cloudEvents_")}
        return Message(type=fallback_type, body=body, headers=kept)
