"""Typed domain events: pydantic models that know their event type and version.

>>> import herald
>>> class EmployeeCreated(herald.Event, type="employee.created"):
...     guid: str
>>> EmployeeCreated.event_type(), EmployeeCreated.event_version()
('employee.created', 1)
>>> EmployeeCreated(guid="g1").model_dump()
{'guid': 'g1'}

A new version of an event type says how to bring older payloads up to date, one
version at a time (see :mod:`herald.versions` for how it travels and is read):

>>> class EmployeeCreatedV2(herald.Event, type="employee.created", version=2):
...     guid: str
...     hired_by: str
>>> @EmployeeCreatedV2.upcast_from(1)
... def _add_hirer(payload: dict[str, object]) -> dict[str, object]:
...     return {**payload, "hired_by": "unknown"}
>>> EmployeeCreatedV2.upcaster(1) is _add_hirer, EmployeeCreatedV2.upcaster(2)
(True, None)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from .topic import is_pattern, validate_pattern

__all__ = ["MAX_VERSION", "Event", "Upcaster"]

MAX_VERSION = 1_000_000
"""The highest event version (versions count up from 1)."""

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the payload of one version of an event type into the next version's."""


def _check_version(version: object, what: str) -> int:
    if type(version) is not int or not 1 <= version <= MAX_VERSION:
        raise ValueError(f"{what} must be an integer from 1 to {MAX_VERSION}, not {version!r}")
    return version


class Event(BaseModel):
    """Base class of typed events. Subclass with ``type="domain.verb"`` and, once the
    type has changed shape, ``version=N`` (default 1).

    Instances are immutable; unknown fields in incoming data are ignored so that
    producers can add fields without breaking consumers (and so that a consumer of an
    older version reads newer events). A subclass that names a new ``type`` starts at
    version 1 unless it says otherwise; one that names no type keeps its parent's.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    __event_type__: ClassVar[str | None] = None
    __event_version__: ClassVar[int] = 1
    __content_type__: ClassVar[str] = "application/json"
    __upcasters__: ClassVar[dict[int, Upcaster]] = {}

    def __init_subclass__(
        cls,
        *,
        type: str | None = None,
        version: int | None = None,
        content_type: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if type is not None:
            validate_pattern(type)
            if is_pattern(type):
                raise ValueError(f"an event type cannot be a pattern: {type!r}")
            cls.__event_type__ = type
            cls.__event_version__ = 1
        if version is not None:
            cls.__event_version__ = _check_version(version, f"{cls.__qualname__}'s version")
        if content_type is not None:
            cls.__content_type__ = content_type
        cls.__upcasters__ = {}

    @classmethod
    def event_type(cls) -> str:
        """The event type this class is published and subscribed as."""
        if cls.__event_type__ is None:
            raise TypeError(
                f"{cls.__qualname__} has no event type: declare it as "
                f"class {cls.__name__}(herald.Event, type='domain.verb')"
            )
        return cls.__event_type__

    @classmethod
    def event_version(cls) -> int:
        """The version of the event type this class is (1 unless declared)."""
        return cls.__event_version__

    @classmethod
    def upcast_from(cls, version: int) -> Callable[[Upcaster], Upcaster]:
        """Register the decorated function as the step from ``version`` to
        ``version + 1`` of this event type: it takes the older payload (a dict) and
        returns the newer one. Steps chain, so a version 3 class that has (or
        inherits, from a class of the same type) the steps from 1 and 2 reads both."""
        step = _check_version(version, "upcast_from's version")
        if step >= cls.__event_version__:
            raise ValueError(
                f"{cls.__qualname__} is version {cls.__event_version__}: it can upcast only "
                f"from older versions, not from {step}"
            )
        if step in cls.__upcasters__:
            raise ValueError(f"{cls.__qualname__} already has an upcaster from version {step}")

        def register(func: Upcaster) -> Upcaster:
            cls.__upcasters__[step] = func
            return func

        return register

    @classmethod
    def upcaster(cls, version: int) -> Upcaster | None:
        """The step from ``version`` to the next, registered on this class or on a
        parent class of the same event type; None when there is none."""
        for klass in cls.__mro__:
            if not (isinstance(klass, type) and issubclass(klass, Event)):
                continue
            if klass.__event_type__ != cls.__event_type__:
                break
            found = klass.__dict__.get("__upcasters__", {}).get(version)
            if found is not None:
                return found  # type: ignore[no-any-return]
        return None
