"""Payload schemas: pydantic models and protobuf descriptors as JSON Schema.

Pydantic models keep their own names under ``components.schemas``; a model used
both ways (decoded from the wire and encoded onto it) may have two schemas,
``Name-Input`` and ``Name-Output``, when the two differ (a ``Decimal`` is accepted
as a number or a string, and written as a string).

>>> from pydantic import BaseModel
>>> class Point(BaseModel):
...     x: int
>>> schemas = Schemas()
>>> document = {"payload": schemas.model(Point, "validation")}
>>> document = schemas.attach(document)
>>> document["payload"], document["components"]["schemas"]["Point"]["required"]
({'$ref': '#/components/schemas/Point'}, ['x'])

A protobuf message becomes the schema of what ``protobuf``'s JSON mapping of it
holds, named by the message's full name:

>>> from google.protobuf.struct_pb2 import ListValue
>>> schemas.protobuf(ListValue.DESCRIPTOR)
{'$ref': '#/components/schemas/google.protobuf.ListValue'}
>>> sorted(schemas.attach({})["components"]["schemas"])
['Point', 'google.protobuf.ListValue', 'google.protobuf.Struct', 'google.protobuf.Value']
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

__all__ = ["REF_PREFIX", "Schemas"]

REF_PREFIX = "#/components/schemas/"
Mode = Literal["validation", "serialization"]

# google.protobuf.descriptor.FieldDescriptor.TYPE_* -> JSON Schema; 64-bit integers are
# JSON strings in protobuf's JSON mapping but integers on the wire and once decoded.
_SCALARS: dict[int, dict[str, Any]] = {
    1: {"type": "number", "format": "double"},
    2: {"type": "number", "format": "float"},
    3: {"type": "integer", "format": "int64"},
    4: {"type": "integer", "format": "uint64", "minimum": 0},
    5: {"type": "integer", "format": "int32"},
    6: {"type": "integer", "format": "fixed64", "minimum": 0},
    7: {"type": "integer", "format": "fixed32", "minimum": 0},
    8: {"type": "boolean"},
    9: {"type": "string"},
    12: {"type": "string", "contentEncoding": "base64"},
    13: {"type": "integer", "format": "uint32", "minimum": 0},
    15: {"type": "integer", "format": "sfixed32"},
    16: {"type": "integer", "format": "sfixed64"},
    17: {"type": "integer", "format": "sint32"},
    18: {"type": "integer", "format": "sint64"},
}
_ENUM, _MESSAGE, _GROUP = 14, 11, 10
_REPEATED = 3


class FieldDescriptor(Protocol):
    name: str
    type: int
    label: int
    message_type: MessageDescriptor
    enum_type: Any


class MessageDescriptor(Protocol):
    full_name: str
    fields: Any

    def GetOptions(self) -> Any: ...


class Schemas:
    """Collects the schemas a document refers to; :meth:`build` returns them by name."""

    def __init__(self) -> None:
        self._models: dict[tuple[type[BaseModel], Mode], None] = {}
        self._protobuf: dict[str, dict[str, Any]] = {}

    def model(self, model: type[BaseModel], mode: Mode) -> dict[str, str]:
        """A reference to ``model``'s schema (``validation``: what it accepts;
        ``serialization``: what it writes)."""
        self._models[(model, mode)] = None
        return {"$ref": REF_PREFIX + _placeholder(model, mode)}

    def protobuf(self, descriptor: MessageDescriptor) -> dict[str, str]:
        """A reference to the schema of protobuf message ``descriptor``."""
        if descriptor.full_name not in self._protobuf:
            self._protobuf[descriptor.full_name] = {}  # a recursive message refers to itself
            self._protobuf[descriptor.full_name] = self._message(descriptor)
        return {"$ref": REF_PREFIX + descriptor.full_name}

    def _message(self, descriptor: MessageDescriptor) -> dict[str, Any]:
        properties = {field.name: self._field(field) for field in descriptor.fields}
        return {
            "type": "object",
            "title": descriptor.full_name,
            "properties": properties,
            "x-protobuf-message": descriptor.full_name,
        }

    def _field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.type in (_MESSAGE, _GROUP):
            entry = field.message_type
            if entry.GetOptions().map_entry:
                by_name = {f.name: f for f in entry.fields}
                return {"type": "object", "additionalProperties": self._field(by_name["value"])}
            item: dict[str, Any] = self.protobuf(entry)
        elif field.type == _ENUM:
            item = {"type": "string", "enum": [value.name for value in field.enum_type.values]}
        else:
            item = dict(_SCALARS.get(field.type, {}))
        if _is_repeated(field):
            return {"type": "array", "items": item}
        return item

    def attach(self, document: dict[str, Any]) -> dict[str, Any]:
        """``document`` with every schema referred to so far in ``components.schemas``
        and its references to them under their final names."""
        schemas: dict[str, Any] = dict(self._protobuf)
        renames: dict[str, str] = {}
        if self._models:
            keys, top = models_json_schema(list(self._models), ref_template=REF_PREFIX + "{model}")
            schemas.update(top.get("$defs", {}))
            renames = {
                REF_PREFIX + _placeholder(model, mode): keys[(model, mode)]["$ref"]
                for model, mode in self._models
            }
        result: dict[str, Any] = _rename(document, renames)
        components = result.setdefault("components", {})
        components["schemas"] = {**components.get("schemas", {}), **schemas}
        return result


def _is_repeated(field: FieldDescriptor) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf >= 5.29; older: the label
    return bool(repeated) if repeated is not None else field.label == _REPEATED


def _placeholder(model: type[BaseModel], mode: Mode) -> str:
    """A name that stands for ``model`` in ``mode`` until :meth:`Schemas.build` knows
    what pydantic calls it."""
    return f"{model.__module__}.{model.__qualname__}.{mode}"


def _rename(value: Any, renames: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: renames.get(v, v) if k == "$ref" else _rename(v, renames) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rename(v, renames) for v in value]
    return value
