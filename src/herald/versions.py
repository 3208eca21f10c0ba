"""Event versions on the wire, and bringing older payloads up to date.

A message carries the version of its event type in the ``dataversion`` header: a
CloudEvents extension attribute (its name is a valid one, lowercase letters only),
written by :meth:`herald.CodecRegistry.envelope` for versions above 1 and read here.
A message without it is version 1: everything published before versions existed,
and what other producers send.

Why an extension attribute and not the core ``dataschema`` attribute: ``dataschema``
is a URI naming a schema document, which other producers set to URIs of their own;
reading a version out of it would mean parsing text Herald does not own, and a
foreign producer's valid URI would read as a malformed version. The version is also
an integer the runtime acts on, like the ``herald-*`` headers in
:mod:`herald.headers`, and Herald's headers already travel as extension attributes
on every broker (in structured events too), as ``traceparent`` does; the name follows
Azure Event Grid's ``dataVersion``. On the way in it is also read under the binding
prefixes (``ce-dataversion``, ``cloudEvents_dataversion``, ...) of other CloudEvents
producers.

Input like any header: a malformed version raises :class:`herald.HeaderError` naming
it, which dead-letters the delivery.

>>> version_of({"dataversion": "2"}), version_of({}), version_of({"ce-dataversion": "3"})
(2, 1, 3)
>>> version_of({"dataversion": "v2"})
Traceback (most recent call last):
...
herald.errors.HeaderError: header dataversion: 'v2' is not an event version (1-1000000)

A handler's class reads a payload of its own version or a newer one as it is (fields
it does not know are ignored); an older one goes through the class's upcasters, one
step at a time:

>>> import herald
>>> class Hired(herald.Event, type="employee.hired", version=3):
...     name: str
...     team: str
>>> @Hired.upcast_from(1)
... def _split(payload: dict[str, object]) -> dict[str, object]:
...     return {"name": f"{payload['first']} {payload['last']}"}
>>> @Hired.upcast_from(2)
... def _team(payload: dict[str, object]) -> dict[str, object]:
...     return {**payload, "team": "unassigned"}
>>> upcast(Hired, {"first": "Ada", "last": "Lovelace"}, 1)
{'name': 'Ada Lovelace', 'team': 'unassigned'}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import HeaderError, UpcastError
from .event import MAX_VERSION, Event

__all__ = ["VERSION", "upcast", "version_from", "version_headers", "version_of"]

VERSION = "dataversion"
"""The header (CloudEvents extension attribute) that carries an event's version."""
_NAMES = tuple(
    f"{prefix}{VERSION}" for prefix in ("", "cloudEvents_", "cloudEvents:", "ce-", "ce_")
)
_NAME_SET = frozenset(_NAMES)
_MAX_TEXT = 16


def version_from(text: str) -> int:
    """An event version from a header: a decimal integer from 1 to ``MAX_VERSION``."""
    if len(text) <= _MAX_TEXT and text.isascii() and text.isdigit():
        value = int(text)
        if 1 <= value <= MAX_VERSION:
            return value
    raise HeaderError(
        f"header {VERSION}: {text[:_MAX_TEXT]!r} is not an event version (1-{MAX_VERSION})"
    )


def version_of(headers: Mapping[str, str]) -> int:
    """The event version a message's headers declare; 1 when they declare none."""
    if not headers or _NAME_SET.isdisjoint(headers):
        return 1
    for name in _NAMES:
        text = headers.get(name)
        if text is not None:
            return version_from(text)
    return 1


def version_headers(event_class: type[Event]) -> dict[str, str]:
    """The headers that declare ``event_class``'s version (none for version 1).

    >>> import herald
    >>> class Moved(herald.Event, type="employee.moved", version=2):
    ...     office: str
    >>> version_headers(Moved)
    {'dataversion': '2'}
    """
    version = event_class.__event_version__
    return {} if version == 1 else {VERSION: str(version)}


def upcast(event_class: type[Event], payload: Any, version: int) -> dict[str, Any]:
    """``payload`` (of ``version``, older than ``event_class``'s) brought up to
    ``event_class``'s version by its upcasters. Raises :class:`herald.UpcastError`
    naming the step that is missing or failed."""
    target = event_class.__event_version__
    name = f"{event_class.__event_type__} version {version}"
    if not isinstance(payload, dict):
        raise UpcastError(f"{name}: the payload is a {type(payload).__name__}, not an object")
    for step in range(version, target):
        upcaster = event_class.upcaster(step)
        if upcaster is None:
            raise UpcastError(
                f"{name} cannot be read as version {target} ({event_class.__qualname__}): "
                f"no upcaster from version {step} (register one with "
                f"@{event_class.__qualname__}.upcast_from({step}))"
            )
        try:
            payload = upcaster(payload)
        except Exception as exc:
            raise UpcastError(
                f"{name}: the upcaster from version {step} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(payload, dict):
            raise UpcastError(
                f"{name}: the upcaster from version {step} returned a "
                f"{type(payload).__name__}, not a dict"
            )
    return payload
