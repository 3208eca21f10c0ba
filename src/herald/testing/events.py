"""Events the conformance scenarios publish."""

from __future__ import annotations

from ..event import Event

__all__ = ["Blob", "Keyed", "Tick"]


class Tick(Event, type="conformance.tick"):
    n: int


class Keyed(Event, type="conformance.keyed"):
    key: str
    seq: int


class Blob(Event, type="conformance.blob"):
    data: str
