"""The schema registry: the JSON Schema of every event type and version that a set of
services publishes and consumes, kept in a committed JSON file.

An entry is one event type at one version: the class that defines it, the services
that publish and consume it, and its pydantic JSON Schema (validation mode). When
several classes share a type and version (a consumer may declare only the fields it
reads), the published class defines the entry; the others are checked against it
(:mod:`herald.schemas.compatibility`).

:func:`merge` keeps the history: entries of versions the code no longer defines stay
in the file (events of those versions may still be queued, retained, or published
by services not yet upgraded), and an entry that a publisher defined is never
replaced by a consumer's partial view. The file is sorted and indented the same way
every time, so a change to it reads as a diff of the schemas.

>>> import herald
>>> class Hired(herald.Event, type="employee.hired"):
...     guid: str
>>> hr = herald.Service("hr", publishes=[Hired])
>>> [(e.type, e.version, e.published_by) for e in entries_of(usages_of([hr]))]
[('employee.hired', 1, ('hr',))]
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..event import Event
from ..service import Service
from ..topic import matches

__all__ = [
    "FORMAT",
    "Entry",
    "Usage",
    "class_name",
    "dumps",
    "entries_of",
    "load",
    "merge",
    "usages_of",
]

FORMAT = "herald-schema-registry/1"
"""The ``format`` of a registry file, for readers to check."""


def class_name(event_class: type[Event]) -> str:
    """``module.QualifiedName`` of a class."""
    return f"{event_class.__module__}.{event_class.__qualname__}"


@dataclass(frozen=True, slots=True)
class Usage:
    """An event class as the given services use it: who publishes, who consumes."""

    event_class: type[Event]
    published_by: tuple[str, ...]
    consumed_by: tuple[str, ...]

    @property
    def key(self) -> tuple[str, int]:
        return self.event_class.event_type(), self.event_class.event_version()


@dataclass(frozen=True, slots=True)
class Entry:
    """One event type at one version, as the registry file holds it."""

    type: str
    version: int
    cls: str
    published_by: tuple[str, ...]
    consumed_by: tuple[str, ...]
    schema: dict[str, Any]

    @property
    def key(self) -> tuple[str, int]:
        return self.type, self.version

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "version": self.version,
            "class": self.cls,
            "published_by": list(self.published_by),
            "consumed_by": list(self.consumed_by),
            "schema": self.schema,
        }


def usages_of(services: Iterable[Service]) -> list[Usage]:
    """Every event class the services publish or consume (handlers, RPC requests, and
    for a pattern handler the published classes its patterns match), by class name."""
    services = list(services)
    published: dict[type[Event], set[str]] = {}
    consumed: dict[type[Event], set[str]] = {}
    for service in services:
        for event_class in service.publishes:
            published.setdefault(event_class, set()).add(service.name)
    for service in services:
        for handler in service.handlers:
            if handler.event_class is not None:
                classes = [handler.event_class]
            else:
                patterns = handler.subscription.patterns
                classes = [
                    c for c in published if any(matches(p, c.event_type()) for p in patterns)
                ]
            for event_class in classes:
                consumed.setdefault(event_class, set()).add(service.name)
        for endpoint in service.endpoints:
            consumed.setdefault(endpoint.request, set()).add(service.name)
    classes = sorted({*published, *consumed}, key=class_name)
    return [
        Usage(c, tuple(sorted(published.get(c, ()))), tuple(sorted(consumed.get(c, ()))))
        for c in classes
    ]


def _entry(usage: Usage, published_by: Iterable[str], consumed_by: Iterable[str]) -> Entry:
    event_class = usage.event_class
    return Entry(
        type=event_class.event_type(),
        version=event_class.event_version(),
        cls=class_name(event_class),
        published_by=tuple(sorted(set(published_by))),
        consumed_by=tuple(sorted(set(consumed_by))),
        schema=event_class.model_json_schema(mode="validation"),
    )


def defining(usages: Sequence[Usage]) -> Usage:
    """Of the classes of one type and version, the one that defines the entry: a
    published one, else the one with the most fields (ties by class name)."""
    return min(
        usages,
        key=lambda u: (
            not u.published_by,
            -len(u.event_class.model_fields),
            class_name(u.event_class),
        ),
    )


def entries_of(usages: Iterable[Usage]) -> list[Entry]:
    """The registry entries the code defines, sorted by type and version."""
    grouped: dict[tuple[str, int], list[Usage]] = {}
    for usage in usages:
        grouped.setdefault(usage.key, []).append(usage)
    entries = []
    for key in sorted(grouped):
        group = grouped[key]
        entries.append(
            _entry(
                defining(group),
                (name for u in group for name in u.published_by),
                (name for u in group for name in u.consumed_by),
            )
        )
    return entries


def merge(old: Iterable[Entry], new: Iterable[Entry]) -> list[Entry]:
    """``old`` updated with ``new``: a new entry replaces an old one of its type and
    version unless the old one has publishers and the new one none (a consumer's view
    does not overwrite the producer's schema); old entries the code no longer defines
    stay."""
    merged = {entry.key: entry for entry in old}
    for entry in new:
        previous = merged.get(entry.key)
        if previous is None or entry.published_by or not previous.published_by:
            merged[entry.key] = entry
    return [merged[key] for key in sorted(merged)]


def dumps(entries: Iterable[Entry]) -> str:
    """The registry file's text: sorted, indented, ending in a newline."""
    document = {"format": FORMAT, "events": [entry.to_json() for entry in entries]}
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def load(path: Path) -> list[Entry]:
    """The entries of a registry file; :class:`herald.ConfigurationError` naming what
    is wrong with it."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(
            f"no schema registry at {path} (write one with herald schema export)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the schema registry {path}: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ConfigurationError(f"{path} is not a herald schema registry (format {FORMAT})")
    entries = []
    for index, item in enumerate(document.get("events") or []):
        try:
            entries.append(
                Entry(
                    type=str(item["type"]),
                    version=int(item["version"]),
                    cls=str(item["class"]),
                    published_by=tuple(item.get("published_by") or ()),
                    consumed_by=tuple(item.get("consumed_by") or ()),
                    schema=dict(item["schema"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"{path}: event {index} is malformed ({exc!r})") from exc
    return entries
