"""Names on a NATS JetStream server: subjects, streams, consumers and filters.

Herald's wire conventions become these names (``ns`` is the ``namespace=`` option)::

    <ns.>events.<event type>     published events, stream <ns>_EVENTS (or EVENTS)
    <ns.>replay.<consumer>       dead letters replayed to one queue, stream <events>_REPLAY
    <ns.>dlq.<service>           dead letters of a service, stream <events>_DLQ

(``stream=NAME`` renames the events stream; the other two follow it.)

A queue ``payroll.employee.created`` is the durable consumer
``payroll_employee_created`` on both the events and the replay stream.

>>> names = Names("t1")
>>> names.event_subject("employee.created"), names.streams.events
('t1.events.employee.created', 't1_EVENTS')
>>> names.filter_subject(("employee.#",))
't1.events.employee.>'
>>> consumer_name("payroll.employee.created")
'payroll_employee_created'
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigurationError

__all__ = ["Names", "StreamNames", "consumer_name", "safe_token"]

_SAFE = re.compile(r"[^A-Za-z0-9-]")
_LOSSLESS = re.compile(r"^[A-Za-z0-9.-]+$")
_STREAM = re.compile(r"^[A-Za-z0-9_-]+$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def safe_token(text: str) -> str:
    """``text`` as one subject token / stream or consumer name: dots and anything but
    letters, digits and ``-`` become ``_``; a short hash keeps lossy names unique.

    >>> safe_token("a.b-c"), safe_token("a_b") == safe_token("a.b")
    ('a_b-c', False)
    """
    if _LOSSLESS.match(text):
        return text.replace(".", "_")
    safe = _SAFE.sub("_", text)
    digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{safe}_{digest}"


def consumer_name(queue: str) -> str:
    """The durable consumer of a queue (no dots, unique per queue name)."""
    return safe_token(queue)


@dataclass(frozen=True, slots=True)
class StreamNames:
    events: str
    replay: str
    dlq: str

    def all(self) -> tuple[str, str, str]:
        return self.events, self.replay, self.dlq


class Names:
    """Every name a broker with namespace ``namespace`` uses on the server."""

    __slots__ = ("namespace", "prefix", "streams")

    def __init__(self, namespace: str = "", stream: str | None = None) -> None:
        if namespace and not _NAMESPACE.match(namespace):
            raise ConfigurationError(
                f"invalid NATS namespace {namespace!r}: use letters, digits, '_', '-' "
                "and dots between words"
            )
        if stream is not None and not _STREAM.match(stream):
            raise ConfigurationError(
                f"invalid JetStream stream name {stream!r}: use letters, digits, '_' and '-'"
            )
        self.namespace = namespace
        self.prefix = f"{namespace}." if namespace else ""
        base = stream or (f"{safe_token(namespace)}_EVENTS" if namespace else "EVENTS")
        self.streams = StreamNames(base, f"{base}_REPLAY", f"{base}_DLQ")

    @property
    def events_wildcard(self) -> str:
        return f"{self.prefix}events.>"

    @property
    def replay_wildcard(self) -> str:
        return f"{self.prefix}replay.*"

    @property
    def dlq_wildcard(self) -> str:
        return f"{self.prefix}dlq.*"

    def event_subject(self, event_type: str) -> str:
        return f"{self.prefix}events.{event_type}"

    def replay_subject(self, queue: str) -> str:
        return f"{self.prefix}replay.{consumer_name(queue)}"

    def dlq_subject(self, service: str) -> str:
        return f"{self.prefix}dlq.{safe_token(service)}"

    def event_type(self, subject: str) -> str | None:
        """The event type a subject on the events stream carries, else None."""
        head = f"{self.prefix}events."
        return subject[len(head) :] if subject.startswith(head) else None

    def filter_subject(self, patterns: Sequence[str]) -> str:
        """The consumer filter for a queue's topic patterns (NATS 2.9: exactly one)."""
        if len(patterns) != 1:
            raise ConfigurationError(
                f"nats:// binds a queue to exactly one pattern, got {list(patterns)}: "
                "NATS 2.9 consumers have a single filter subject; use one handler per pattern"
            )
        words = patterns[0].split(".")
        for index, word in enumerate(words):
            if word == "#" and index != len(words) - 1:
                raise ConfigurationError(
                    f"nats:// cannot bind pattern {patterns[0]!r}: '#' is only supported as "
                    "the last word (it becomes NATS's '>', which matches one or more words)"
                )
        if words[-1] == "#":
            words[-1] = ">"
        return self.event_subject(".".join(words))
