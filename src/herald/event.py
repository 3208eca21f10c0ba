"""Typed domain events: pydantic models that know their event type.

>>> import herald
>>> class EmployeeCreated(herald.Event, type="employee.created"):
...     guid: str
>>> EmployeeCreated.event_type()
'employee.created'
>>> EmployeeCreated(guid="g1").model_dump()
{'guid': 'g1'}
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from .topic import is_pattern, validate_pattern

__all__ = ["Event"]


class Event(BaseModel):
    """Base class of typed events. Subclass with ``type="domain.verb"``.

    Instances are immutable; unknown fields in incoming data are ignored so that
    producers can add fields without breaking consumers.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    __event_type__: ClassVar[str | None] = None
    __content_type__: ClassVar[str] = "application/json"

    def __init_subclass__(
        cls,
        *,
        type: str | None = None,
        content_type: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if type is not None:
            validate_pattern(type)
            if is_pattern(type):
                raise ValueError(f"an event type cannot be a pattern: {type!r}")
            cls.__event_type__ = type
        if content_type is not None:
            cls.__content_type__ = content_type

    @classmethod
    def event_type(cls) -> str:
        """The event type this class is published and subscribed as."""
        if cls.__event_type__ is None:
            raise TypeError(
                f"{cls.__qualname__} has no event type: declare it as "
                f"class {cls.__name__}(herald.Event, type='domain.verb')"
            )
        return cls.__event_type__
