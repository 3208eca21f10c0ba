"""Messages as NATS headers and payload.

This is the CloudEvents NATS binding's binary content mode: every attribute, the
``datacontenttype`` too, travels as a ``ce-`` header (``ce-id``, ``ce-type``, ...)
whose value is percent-encoded as the binding says (space, ``"``, ``%`` and anything
outside printable ASCII as ``%XX`` of its UTF-8 bytes), the data as the payload; the
message id also as ``Nats-Msg-Id`` (JetStream's de-duplication key; not on RPC
requests and replies sent on core NATS, which JetStream never sees). Read back, ``ce-``
headers are percent-decoded (after RFC 7230 quoted strings are unquoted), names in
any case. A message with a ``Content-Type`` header of ``application/cloudevents+json``
is a structured event, read from its payload. Messages that older Herald stored with
``cloudEvents_*`` headers still decode.

The message's own headers travel as they are. NATS header values are single trimmed
lines, so one with a line break, surrounding blanks or non-ASCII text is sent
base64-encoded and its name listed in ``Herald-B64``. Header names must be RFC 7230
tokens (nats-py refuses anything else); a message with another name is refused
before anything is sent.

>>> from herald.message import Message
>>> m = Message(type="a.b", body=b"{}", headers={"err": " two\\nlines ", "x": "1"})
>>> h = to_headers(m)
>>> h["Herald-B64"], h["x"], h["Nats-Msg-Id"] == m.id, h["ce-type"]
('err', '1', True, 'a.b')
>>> to_headers(Message(type="a.b", body=b"", subject="Euro € 100%"))["ce-subject"]
'Euro%20%E2%82%AC%20100%25'
>>> from_headers({"ce-type": "a.b", "ce-subject": '"k 1"%21'}, b"", None, "id").subject
'k 1!'

>>> from_headers(h, b"{}", "a.b", "fallback-id").headers == {"err": " two\\nlines ", "x": "1"}
True
>>> header_bytes({"a": "1"})
18
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from urllib.parse import quote, unquote_to_bytes

from ...errors import DecodeError, HeaderError, MessageTooLargeError, PublishError
from ...message import Message
from ...wire import MAX_ATTRIBUTE, UNDECODABLE_TYPE, decode_message, encode_headers, is_event_type

__all__ = [
    "CE_HEADER",
    "ENCODED",
    "MSG_ID",
    "RAW_PREFIX",
    "check_fits",
    "from_headers",
    "header_bytes",
    "message_id_of",
    "to_headers",
    "undecodable",
]

CE_HEADER = "ce-"
"""The prefix of the CloudEvents attribute headers (the NATS binding's)."""
MSG_ID = "Nats-Msg-Id"
ENCODED = "Herald-B64"
RAW_PREFIX = "herald-raw-"
"""An undecodable message keeps the headers it arrived with under this prefix."""
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKENS: set[str] = set()
"""Header names seen to be tokens (names repeat from message to message), up to
``_MAX_TOKENS`` of them."""
_MAX_TOKENS = 1024
_BLOCK = len(b"NATS/1.0\r\n") + len(b"\r\n")
_LINE = len(b": \r\n")
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
_CE_CASES = ("ce-", "Ce-", "cE-", "CE-")
_UNENCODED = re.compile(r"[!#$&-~]*")  # printable ASCII but space, '"' and '%'


def _plain(value: str) -> bool:
    return value.isascii() and value.isprintable() and value[:1] != " " and value[-1:] != " "


def to_headers(
    message: Message, msg_id: str | None = None, *, dedup: bool = True
) -> dict[str, str]:
    """NATS headers for ``message``; ``msg_id`` overrides the de-duplication key, and
    ``dedup=False`` leaves it out (core NATS, where JetStream does not see the message).

    >>> MSG_ID in to_headers(Message(type="a.b", body=b""), dedup=False)
    False
    """
    headers = encode_headers(message, prefix=CE_HEADER)
    encoded = []
    for name, value in headers.items():
        if name not in _TOKENS:
            if not _TOKEN.fullmatch(name):
                raise PublishError(
                    f"message {message.id}: header name {name[:100]!r} cannot travel on "
                    "NATS (use letters, digits and !#$%&'*+-.^_`|~)"
                )
            _known_token(name)
        if name.startswith(_CE_CASES):
            if not _UNENCODED.fullmatch(value):
                headers[name] = quote(value, safe=_SAFE)
        elif not _plain(value):
            encoded.append(name)
    for name in encoded:
        headers[name] = base64.b64encode(headers[name].encode()).decode()
    if encoded:
        headers[ENCODED] = ",".join(encoded)
    if dedup:
        headers[MSG_ID] = msg_id or message.id
    return headers


def _known_token(name: str) -> None:
    if len(_TOKENS) < _MAX_TOKENS:
        _TOKENS.add(name)


def _percent_decoded(name: str, value: str) -> str:
    """A ``ce-`` header's value: quoted strings unquoted, then percent-decoded once."""
    if '"' in value:
        value = _unquoted(name, value)
    if "%" not in value:
        return value
    try:
        return unquote_to_bytes(value).decode()
    except UnicodeDecodeError:
        raise DecodeError(f"header {name[:100]!r} is not percent-encoded UTF-8") from None


def _unquoted(name: str, value: str) -> str:
    out: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            out.append(char)
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        else:
            out.append(char)
    if quoted:
        raise DecodeError(f"header {name[:100]!r} has a quoted string that does not end")
    return "".join(out)


def header_bytes(headers: Mapping[str, str]) -> int:
    """The size of the header block nats-py sends for ``headers`` (from :func:`to_headers`:
    ASCII only), which counts against the server's ``max_payload`` with the body."""
    return _BLOCK + sum(len(name) + len(value) + _LINE for name, value in headers.items())


def check_fits(message: Message, headers: Mapping[str, str], limit: int) -> None:
    """Raise :class:`herald.MessageTooLargeError` unless body and header block together
    fit in ``limit`` bytes. nats-py checks the body alone, and the server closes the
    connection on a message over its ``max_payload``, so this is checked first."""
    room = limit - header_bytes(headers)
    if len(message.body) > room:
        raise MessageTooLargeError(
            message.id,
            len(message.body),
            max(room, 0),
            f"NATS (with its {header_bytes(headers):,} bytes of headers, in {limit:,})",
        )


def from_headers(
    raw: Mapping[str, str] | None, body: bytes, default_type: str | None, message_id: str
) -> Message:
    """Rebuild a message from received headers (JetStream's ``Nats-*`` ones dropped).

    ``message_id`` is used when the message carries no id of its own (neither a
    CloudEvents id nor a ``Nats-Msg-Id``). Raises :class:`herald.DecodeError` or
    :class:`herald.HeaderError`, nothing else.
    """
    raw = raw or {}
    listed = raw.get(ENCODED)
    encoded = set(filter(None, str(listed).split(","))) if listed else set()
    headers: dict[str, str] = {}
    for key, value in raw.items():
        if key == ENCODED or key.startswith("Nats-"):
            continue
        if key not in _TOKENS:
            if not _TOKEN.fullmatch(key):
                raise HeaderError(f"header name {key[:100]!r} is not a NATS header token")
            _known_token(key)
        text = value
        if key in encoded:
            try:
                text = base64.b64decode(text, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise DecodeError(f"header {key!r} is not valid base64 text") from exc
        elif ("%" in text or '"' in text) and key.startswith(_CE_CASES):
            text = _percent_decoded(key, text)
        headers[key] = text
    return decode_message(
        headers, body, default_type=default_type, message_id=message_id_of(raw, message_id)
    )


def message_id_of(raw: Mapping[str, str] | None, fallback: str) -> str:
    """The ``Nats-Msg-Id`` a message was published with, else ``fallback``."""
    own = (raw or {}).get(MSG_ID)
    return own if own is not None and 0 < len(own) <= MAX_ATTRIBUTE else fallback


def undecodable(
    raw: Mapping[str, str] | None, body: bytes, event_type: str | None, message_id: str
) -> Message:
    """A best-effort message for one that cannot be decoded: the body as received,
    the type from the subject (else ``herald.undecodable``), and the received headers
    (those with token names) as ``herald-raw-<name>``, kept for its dead letter."""
    headers = {
        f"{RAW_PREFIX}{name}": value
        for name, value in (raw or {}).items()
        if _TOKEN.fullmatch(name) and len(name) <= 200
    }
    return Message(
        type=event_type if event_type and is_event_type(event_type) else UNDECODABLE_TYPE,
        body=body,
        id=message_id_of(raw, message_id),
        headers=headers,
    )
