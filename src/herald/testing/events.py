"""Events the conformance scenarios publish."""

from __future__ import annotations

from typing import Any

from ..event import Event

__all__ = ["Blob", "Greeting", "GreetingV2", "Keyed", "Tick"]


class Tick(Event, type="conformance.tick"):
    n: int


class Keyed(Event, type="conformance.keyed"):
    key: str
    seq: int


class Blob(Event, type="conformance.blob"):
    data: str


class Greeting(Event, type="conformance.greeting"):
    """Version 1 of a versioned event."""

    name: str


class GreetingV2(Event, type="conformance.greeting", version=2):
    """Version 2 adds a required ``language``; version 1 greetings were English."""

    name: str
    language: str


@GreetingV2.upcast_from(1)
def _english(payload: dict[str, Any]) -> dict[str, Any]:
    return {"name": payload["name"], "language": "en"}
