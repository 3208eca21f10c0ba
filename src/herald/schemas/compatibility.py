"""The compatibility rules :func:`check` applies between the code and the registry.

Every event class the services use is compared with the registry entry of its type
and version. A class compares by its fields (the JSON Schema's ``properties`` and
``required``); a field's schema is compared whole, nested models and ``$ref`` included,
ignoring only ``title``, ``description``, ``default`` and ``examples``.

Compatible (reported, exit status 0):

- a new optional field (one with a default): older events lack it and still validate;
- a required field made optional;
- a consumer's class that leaves out fields of the published one (it reads a subset);
- a new version of a type, when the class can upcast from every older version in the
  registry (an upcaster for each step, see :meth:`herald.Event.upcast_from`);
- a type or version the registry does not hold yet (``herald schema export`` adds it).

Breaking (exit status 1), each named by type, version and field:

- a field removed from a published class (its consumers still read it);
- a field whose schema changed (a type changed, a nested model changed);
- a field made required, or a new required field (older events lack it);
- a class of a newer version with no upcaster from an older one in the registry;
- a consumer of an older version that cannot read a newer version as its own (a
  field it requires is missing there, or has another schema), since a newer event is
  read as the consumer's own version with unknown fields ignored.

>>> import herald
>>> from herald.schemas.registry import entries_of, usages_of
>>> class Hired(herald.Event, type="employee.hired"):
...     guid: str
>>> old = entries_of(usages_of([herald.Service("hr", publishes=[Hired])]))
>>> class Hired(herald.Event, type="employee.hired"):  # the next commit removes guid
...     name: str
>>> report = check(usages_of([herald.Service("hr", publishes=[Hired])]), old)
>>> [str(problem) for problem in report.breaking]  # doctest: +NORMALIZE_WHITESPACE
["employee.hired version 1 (herald.schemas.compatibility.Hired): field 'guid' removed",
 "employee.hired version 1 (herald.schemas.compatibility.Hired): new field 'name' is required"]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .registry import Entry, Usage, class_name, entries_of

__all__ = ["Finding", "Report", "check", "compare"]

_ANNOTATIONS = frozenset(("title", "description", "default", "examples"))


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing :func:`check` found about one class of an event type and version."""

    type: str
    version: int
    cls: str
    text: str

    def __str__(self) -> str:
        return f"{self.type} version {self.version} ({self.cls}): {self.text}"


@dataclass(slots=True)
class Report:
    """What :func:`check` found: breaking changes and compatible ones."""

    breaking: list[Finding] = field(default_factory=list)
    compatible: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaking


def _normal(schema: Any, defs: Mapping[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """``schema`` with ``$ref``s into ``defs`` inlined and annotations dropped."""
    if isinstance(schema, list):
        return [_normal(item, defs, seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in seen or name not in defs:
            return {"$ref": name}
        return _normal(defs[name], defs, (*seen, name))
    return {
        key: _normal(value, defs, seen)
        for key, value in schema.items()
        if key not in _ANNOTATIONS and key != "$defs"
    }


def _short(schema: Any, limit: int = 200) -> str:
    text = str(schema)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _fields(schema: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    defs = schema.get("$defs") or {}
    properties = schema.get("properties") or {}
    normal = {name: _normal(value, defs) for name, value in properties.items()}
    return normal, set(schema.get("required") or ())


def compare(
    new: Mapping[str, Any], old: Mapping[str, Any], *, published: bool
) -> tuple[list[str], list[str]]:
    """Compare the JSON Schema ``new`` of a class with ``old``, the registry's schema
    of its type and version: (breaking changes, compatible changes), each a sentence
    naming the field. ``published``: the class is published, so leaving out a field
    of ``old`` removes it (a consumer's class may leave fields out).

    >>> old = {"properties": {"a": {"type": "string"}}, "required": ["a"]}
    >>> compare({"properties": {"a": {"type": "integer"}}, "required": ["a"]}, old, published=True)
    (["field 'a' changed type: was {'type': 'string'}, now {'type': 'integer'}"], [])
    """
    new_fields, new_required = _fields(new)
    old_fields, old_required = _fields(old)
    breaking: list[str] = []
    compatible: list[str] = []
    for name in sorted(old_fields.keys() - new_fields.keys()):
        if published:
            breaking.append(f"field {name!r} removed")
    for name in sorted(old_fields.keys() & new_fields.keys()):
        if new_fields[name] != old_fields[name]:
            was, now = _short(old_fields[name]), _short(new_fields[name])
            breaking.append(f"field {name!r} changed type: was {was}, now {now}")
        elif name in new_required and name not in old_required:
            breaking.append(f"field {name!r} made required")
        elif name in old_required and name not in new_required:
            compatible.append(f"field {name!r} made optional")
    for name in sorted(new_fields.keys() - old_fields.keys()):
        if name in new_required:
            breaking.append(f"new field {name!r} is required")
        else:
            compatible.append(f"added optional field {name!r}")
    return breaking, compatible


def check(usages: Sequence[Usage], registry: Iterable[Entry]) -> Report:
    """Check the classes ``usages`` names against the ``registry`` by the rules in
    this module's docstring."""
    report = Report()
    known = {entry.key: entry for entry in registry}
    writers = {**known, **{e.key: e for e in entries_of(usages) if e.published_by}}
    for usage in usages:
        event_type, version = usage.key
        name = class_name(usage.event_class)
        for text, broken in _findings(usage, known, writers):
            finding = Finding(event_type, version, name, text)
            (report.breaking if broken else report.compatible).append(finding)
    return report


def _findings(
    usage: Usage,
    known: Mapping[tuple[str, int], Entry],
    writers: Mapping[tuple[str, int], Entry],
) -> Iterator[tuple[str, bool]]:
    """(finding, whether it breaks) for one class."""
    event_class = usage.event_class
    event_type, version = usage.key
    schema = event_class.model_json_schema(mode="validation")
    entry = known.get(usage.key)
    if entry is None:
        yield "not in the registry yet (herald schema export adds it)", False
    else:
        breaking, compatible = compare(schema, entry.schema, published=bool(usage.published_by))
        yield from ((text, True) for text in breaking)
        yield from ((text, False) for text in compatible)
    for older in sorted(v for t, v in known if t == event_type and v < version):
        missing = [s for s in range(older, version) if event_class.upcaster(s) is None]
        if missing:
            yield (
                (
                    f"cannot read version {older} of the registry: no upcaster from version "
                    f"{missing[0]} (register one with @{event_class.__qualname__}"
                    f".upcast_from({missing[0]}))"
                ),
                True,
            )
    if usage.consumed_by:
        for (writer_type, newer), writer in sorted(writers.items()):
            if writer_type == event_type and newer > version:
                for text in _unreadable(schema, writer.schema):
                    yield f"cannot read version {newer} as its own: {text} there", True


def _unreadable(reader: Mapping[str, Any], writer: Mapping[str, Any]) -> list[str]:
    """Why a consumer's class cannot read events of the ``writer`` schema (a newer
    version, read as the consumer's own with unknown fields ignored)."""
    reader_fields, reader_required = _fields(reader)
    writer_fields, writer_required = _fields(writer)
    problems = []
    for name in sorted(reader_fields):
        if name not in writer_fields:
            if name in reader_required:
                problems.append(f"field {name!r} it requires is missing")
        elif reader_fields[name] != writer_fields[name]:
            problems.append(f"field {name!r} has another schema")
        elif name in reader_required and name not in writer_required:
            problems.append(f"field {name!r} it requires is optional")
    return problems
