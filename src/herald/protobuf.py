"""Protobuf on the wire: a codec for services that speak it (``pip install protobuf``).

An event class opts in per event type with ``content_type="application/protobuf"``
and names its generated message class in ``__protobuf__``; every other event stays
JSON. Decoding follows the content type of each incoming message, so one handler
accepts JSON from Python producers and protobuf from, say, Ruby ones. A message
class can also be registered on the codec by event type, for event classes that
stay JSON when they publish but must read protobuf from others.

>>> import herald
>>> from typing import ClassVar
>>> from google.protobuf.struct_pb2 import Value
>>> class Scored(herald.Event, type="game.scored", content_type="application/protobuf"):
...     __protobuf__: ClassVar[type] = Value
...     number_value: float
>>> codecs = with_protobuf()
>>> content_type, body = codecs.encode(Scored(number_value=3.0))
>>> content_type, codecs.decode(body, content_type, Scored)
('application/protobuf', Scored(number_value=3.0))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic
from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message as ProtobufMessage

from .codec import CodecRegistry, JSONCodec
from .errors import ConfigurationError, DecodeError, ValidationError
from .event import Event

__all__ = ["CONTENT_TYPE", "ProtobufCodec", "with_protobuf"]

CONTENT_TYPE = "application/protobuf"
E = TypeVar("E", bound=Event)


class ProtobufCodec:
    """Events <-> protobuf bytes, field by field by name.

    Fields of the event that the message does not declare are left out when
    encoding; fields of the message that the event does not declare are ignored
    when decoding (the event's defaults fill what the message lacks).
    """

    def __init__(
        self,
        messages: Mapping[str, type[ProtobufMessage]] | None = None,
        *,
        content_type: str = CONTENT_TYPE,
    ) -> None:
        self.content_type = content_type
        self._messages: dict[str, type[ProtobufMessage]] = dict(messages or {})

    def register(self, event_type: str, message_class: type[ProtobufMessage]) -> None:
        """Decode (and encode) events of ``event_type`` as ``message_class``."""
        self._messages[event_type] = message_class

    def message_class(self, event_class: type[Event]) -> type[ProtobufMessage] | None:
        """The protobuf class for ``event_class``: its ``__protobuf__``, else registered."""
        declared = getattr(event_class, "__protobuf__", None)
        if isinstance(declared, type) and issubclass(declared, ProtobufMessage):
            return declared
        return self._messages.get(event_class.__event_type__ or "")

    def encode(self, event: Event) -> bytes:
        message_class = self.message_class(type(event))
        if message_class is None:
            raise ConfigurationError(
                f"{type(event).__qualname__} has content type {self.content_type} but no "
                "protobuf message class: set __protobuf__ or register one on the codec"
            )
        names = {field.name for field in message_class.DESCRIPTOR.fields}
        data = {k: v for k, v in event.model_dump(mode="json").items() if k in names}
        try:
            message = json_format.ParseDict(data, message_class())
        except json_format.ParseError as exc:
            raise ConfigurationError(
                f"{type(event).__qualname__} does not fit {message_class.__name__}: {exc}"
            ) from exc
        return message.SerializeToString()

    def payload(self, body: bytes, event_class: type[Event]) -> dict[str, Any]:
        """The message's fields by name, as protobuf's JSON mapping has them."""
        message_class = self.message_class(event_class)
        if message_class is None:
            raise DecodeError(
                f"a {self.content_type} message arrived for {event_class.__qualname__}, "
                "which has no protobuf message class"
            )
        try:
            message = message_class.FromString(body)
        except ProtobufDecodeError as exc:
            raise DecodeError(f"body is not a valid {message_class.__name__}: {exc}") from exc
        data: dict[str, Any] = json_format.MessageToDict(
            message,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        return data

    def decode(self, body: bytes, event_class: type[E]) -> E:
        data = self.payload(body, event_class)
        known = {k: v for k, v in data.items() if k in event_class.model_fields}
        try:
            return event_class.model_validate(known)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<body>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ValidationError(f"invalid {event_class.__qualname__}: {problems}") from exc


def with_protobuf(
    registry: CodecRegistry | None = None,
    messages: Mapping[str, type[ProtobufMessage]] | None = None,
) -> CodecRegistry:
    """A registry with JSON and protobuf (``messages``: event type -> message class).

    Pass it to ``herald.connect(url, codecs=...)``. With ``registry`` the protobuf
    codec is added to that registry, which is returned.
    """
    codecs = registry if registry is not None else CodecRegistry(JSONCodec())
    codecs.register(ProtobufCodec(messages))
    return codecs
