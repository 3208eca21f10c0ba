"""What a :mod:`.client` process wrote, read back by the test that ran it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Records", "first_after"]


@dataclass
class Records:
    ready: list[float] = field(default_factory=list)
    published: list[tuple[int, float]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    handled: list[tuple[int, float]] = field(default_factory=list)
    warnings: list[tuple[float, str]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Records:
        found = cls()
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return found
        for line in lines:
            tag, _, rest = line.partition(" ")
            if tag == "ready":
                found.ready.append(float(rest))
            elif tag in ("p", "h"):
                n, _, when = rest.partition(" ")
                if when:
                    (found.published if tag == "p" else found.handled).append((int(n), float(when)))
            elif tag in ("e", "l"):
                when, _, text = rest.partition(" ")
                (found.errors if tag == "e" else found.warnings).append((float(when), text))
        return found

    def handled_numbers(self) -> Counter[int]:
        return Counter(n for n, _ in self.handled)

    def warnings_between(self, start: float, end: float) -> list[tuple[float, str]]:
        return [(t, text) for t, text in self.warnings if start <= t <= end]


def first_after(rows: list[tuple[int, float]], moment: float, at_least: int = 0) -> float | None:
    """When the first row after ``moment`` (and of a number >= ``at_least``) came."""
    return next((t for n, t in rows if t > moment and n >= at_least), None)
