"""Event schemas in a committed registry, and the rules their evolution must follow.

``herald schema export APP...`` writes the registry (:mod:`herald.schemas.registry`);
``herald schema check APP... --registry FILE`` compares the code with it by the rules
of :mod:`herald.schemas.compatibility`, and fails on a breaking change.

>>> import herald
>>> class Hired(herald.Event, type="employee.hired"):
...     guid: str
>>> hr = herald.Service("hr", publishes=[Hired])
>>> registry = entries_of(usages_of([hr]))
>>> class Hired(herald.Event, type="employee.hired"):  # next commit: an optional field
...     guid: str
...     team: str = ""
>>> report = check(usages_of([herald.Service("hr", publishes=[Hired])]), registry)
>>> report.ok, [str(finding) for finding in report.compatible]
(True, ["employee.hired version 1 (herald.schemas.Hired): added optional field 'team'"])
"""

from .compatibility import Finding, Report, check, compare
from .registry import FORMAT, Entry, Usage, dumps, entries_of, load, merge, usages_of

__all__ = [
    "FORMAT",
    "Entry",
    "Finding",
    "Report",
    "Usage",
    "check",
    "compare",
    "dumps",
    "entries_of",
    "load",
    "merge",
    "usages_of",
]
