"""Codecs turn events into bytes and back, chosen by content type.

>>> import herald
>>> class Hired(herald.Event, type="employee.hired"):
...     guid: str
>>> content_type, body = default_codecs.encode(Hired(guid="g1"))
>>> content_type, body
('application/json', b'{"guid":"g1"}')
>>> default_codecs.decode(body, content_type, Hired)
Hired(guid='g1')

:meth:`CodecRegistry.read` decodes a message by its version (see :mod:`herald.versions`):
an older one is decoded to a dict (``payload``, which the JSON and protobuf codecs
offer), brought up to date by the class's upcasters, then validated.

>>> class HiredV2(herald.Event, type="employee.hired", version=2):
...     guid: str
...     team: str
>>> @HiredV2.upcast_from(1)
... def _team(payload: dict[str, object]) -> dict[str, object]:
...     return {**payload, "team": "unassigned"}
>>> message = default_codecs.envelope(Hired(guid="g1"), source="doctest")
>>> default_codecs.read(message, HiredV2)
HiredV2(guid='g1', team='unassigned')
>>> default_codecs.envelope(HiredV2(guid="g2", team="people"), source="doctest").headers
mappingproxy({'dataversion': '2'})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

import pydantic
import pydantic_core

from .errors import DecodeError, UpcastError, ValidationError
from .event import Event
from .message import Message
from .versions import upcast, version_headers, version_of

__all__ = ["Codec", "CodecRegistry", "JSONCodec", "default_codecs"]

E = TypeVar("E", bound=Event)


class Codec(Protocol):
    """Encodes events of any class to bytes and decodes bytes into a given class.

    A codec may also offer ``payload(body, event_class) -> dict``, the body as plain
    data before validation, which reading an older version of an event needs."""

    content_type: str

    def encode(self, event: Event) -> bytes: ...

    def decode(self, body: bytes, event_class: type[E]) -> E: ...


class JSONCodec:
    """JSON through pydantic: fast, strict about types, tolerant of extra fields."""

    content_type = "application/json"

    def encode(self, event: Event) -> bytes:
        return event.__pydantic_serializer__.to_json(event)

    def decode(self, body: bytes, event_class: type[E]) -> E:
        try:  # the validator itself: model_validate_json adds a call and checks per event
            return event_class.__pydantic_validator__.validate_json(body)  # type: ignore[no-any-return]
        except pydantic.ValidationError as exc:
            if any(err["type"] == "json_invalid" for err in exc.errors()):
                raise DecodeError(f"body is not valid JSON: {exc.errors()[0]['msg']}") from exc
            raise ValidationError(_describe(event_class, exc)) from exc

    def payload(self, body: bytes, event_class: type[Event]) -> Any:
        """The body as plain JSON data (an older version, before its upcasters run)."""
        try:
            return pydantic_core.from_json(body)
        except ValueError as exc:
            raise DecodeError(f"body is not valid JSON: {exc}") from exc


def _describe(event_class: type[Event], exc: pydantic.ValidationError, how: str = "") -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<body>'}: {err['msg']}" for err in exc.errors()
    )
    return f"invalid {event_class.__qualname__}{how}: {problems}"


class CodecRegistry:
    """Codecs by content type; an event class picks its own via ``content_type=``."""

    def __init__(self, *codecs: Codec) -> None:
        self._codecs: dict[str, Codec] = {}
        self._by_header: dict[str, Codec] = {}
        self._by_class: dict[type[Event], tuple[str, Codec, Mapping[str, str]]] = {}
        for codec in codecs:
            self.register(codec)

    def register(self, codec: Codec) -> None:
        self._codecs[codec.content_type] = codec
        self._by_header.clear()
        self._by_class.clear()

    def get(self, content_type: str) -> Codec:
        codec = self._by_header.get(content_type)
        if codec is not None:
            return codec
        base = content_type.split(";", 1)[0].strip().lower()
        try:
            codec = self._codecs[base]
        except KeyError:
            known = ", ".join(sorted(self._codecs)) or "none"
            raise DecodeError(
                f"no codec for content type {content_type[:100]!r} (registered: {known})"
            ) from None
        if len(self._by_header) < 256:
            self._by_header[content_type] = codec
        return codec

    def encode(self, event: Event) -> tuple[str, bytes]:
        codec = self.get(type(event).__content_type__)
        return codec.content_type, codec.encode(event)

    def envelope(
        self,
        event: Event | Message,
        *,
        source: str,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """The message that carries ``event``: encoded, typed, keyed (``subject``) and
        with ``headers`` merged; a :class:`Message` is passed through, re-keyed if asked."""
        if isinstance(event, Message):
            message = event if key is None else replace(event, subject=key)
            return message.with_headers(headers) if headers else message
        known = self._by_class.get(type(event))
        if known is None:
            known = self._learn(event)
        event_type, codec, version = known
        return Message(
            type=event_type,
            body=codec.encode(event),
            source=source,
            subject=key,
            datacontenttype=codec.content_type,
            headers={**headers, **version} if headers else version,
        )

    def _learn(self, event: object) -> tuple[str, Codec, Mapping[str, str]]:
        """What every envelope of ``event``'s class shares: its type, codec and
        version headers (immutable, so each message holds them without a copy)."""
        if not isinstance(event, Event):
            raise TypeError(f"expected a herald.Event or herald.Message, not {event!r}")
        event_class = type(event)
        codec = self.get(event_class.__content_type__)
        known = (
            event_class.event_type(),
            codec,
            MappingProxyType(version_headers(event_class)),
        )
        if len(self._by_class) < 4096:
            self._by_class[event_class] = known
        return known

    def decode(self, body: bytes, content_type: str, event_class: type[E]) -> E:
        return self.get(content_type or "application/json").decode(body, event_class)

    def read(self, message: Message, event_class: type[E]) -> E:
        """``message`` as ``event_class``, by the version it declares: its own version
        or a newer one as it is, an older one through the class's upcasters. Raises
        :class:`herald.MessageError` (a malformed version header, undecodable bytes,
        an upcaster missing or failing, invalid data), never anything else."""
        version = version_of(message.headers)
        codec = self.get(message.datacontenttype or "application/json")
        if version >= event_class.__event_version__:
            return codec.decode(message.body, event_class)
        payload_of = getattr(codec, "payload", None)
        if payload_of is None:
            raise UpcastError(
                f"{message.type} version {version} cannot be upcast: the {codec.content_type} "
                "codec does not give payloads as data"
            )
        payload = upcast(event_class, payload_of(message.body, event_class), version)
        try:
            return event_class.model_validate(payload)
        except pydantic.ValidationError as exc:
            how = f" (upcast from version {version})"
            raise ValidationError(_describe(event_class, exc, how)) from exc


default_codecs = CodecRegistry(JSONCodec())
