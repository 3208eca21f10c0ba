"""Key names of a namespace, and the bindings a publisher routes with.

Every key lives under ``<namespace>:herald:`` (``herald:`` without a namespace). The
keys of one service carry the service as a hash tag, ``{<service>}``, so that a queue
stream, its delayed retries, its consumers' liveness and the service's dead letters
share one hash slot and the scripts settling a delivery touch a single slot (an
exclusive queue's lock and hand-off list too). Only the
bindings (one hash and its version, per namespace) are untagged: a publish reads the
version and fans out to the queues of any services, and so does a declaration.

>>> keys = Keys.for_namespace("ns")
>>> keys.queue("payroll.employee.created")
'ns:herald:{payroll}:q:payroll.employee.created'
>>> keys.dead_letters("payroll"), keys.bindings
('ns:herald:{payroll}:dlq', 'ns:herald:bindings')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...message import Message
from ...topic import matches
from .wire import encode_fields

__all__ = ["Keys", "Routes", "service_of"]


def service_of(queue: str) -> str:
    """The service a queue ``<service>.<name>`` belongs to (service names have no dots)."""
    return queue.partition(".")[0]


@dataclass(frozen=True, slots=True)
class Keys:
    """Every key the broker uses, under ``<namespace>:herald:``."""

    prefix: str

    @classmethod
    def for_namespace(cls, namespace: str) -> Keys:
        return cls(f"{namespace}:herald:" if namespace else "herald:")

    @property
    def bindings(self) -> str:
        """Hash: queue -> its patterns, space separated."""
        return f"{self.prefix}bindings"

    @property
    def version(self) -> str:
        """A random token, replaced whenever a binding changes."""
        return f"{self.prefix}bindings:version"

    @property
    def scan_pattern(self) -> str:
        """A ``SCAN MATCH`` pattern for every key of the namespace."""
        return "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix) + "*"

    def _service(self, service: str) -> str:
        return f"{self.prefix}{{{service}}}:"

    def queue(self, queue: str) -> str:
        """Stream of the queue's unsettled entries; its consumer group is named ``queue``."""
        return f"{self._service(service_of(queue))}q:{queue}"

    def delayed(self, queue: str) -> str:
        """Sorted set of the queue's retries waiting out their delay (score: due, ms)."""
        return f"{self._service(service_of(queue))}delayed:{queue}"

    def consumers(self, queue: str) -> str:
        """Sorted set of the queue's live consumers (score: when they expire, ms)."""
        return f"{self._service(service_of(queue))}consumers:{queue}"

    def lock(self, queue: str) -> str:
        """String: the consumer taking deliveries from an exclusive queue (expires
        unless renewed)."""
        return f"{self._service(service_of(queue))}lock:{queue}"

    def handoff(self, queue: str) -> str:
        """List: pushed to when an exclusive queue's holder lets go; standbys block on it."""
        return f"{self._service(service_of(queue))}handoff:{queue}"

    def dead_letters(self, service: str) -> str:
        """Stream of the service's dead letters."""
        return f"{self._service(service)}dlq"


@dataclass(slots=True)
class Routes:
    """The bindings as this publisher last read them, and the queues of each type.

    ``version`` is None until loaded; the publish script refuses a batch routed with
    a version that is no longer current, and the publisher loads them again.
    """

    keys: Keys
    version: str | None = None
    _bindings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _targets: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def load(self, version: bytes | None, bindings: Mapping[bytes, bytes]) -> None:
        self._bindings = {
            queue.decode(): tuple(patterns.decode().split()) for queue, patterns in bindings.items()
        }
        self._targets.clear()
        self.version = version.decode() if version else ""

    def forget(self) -> None:
        self.version = None

    def _queues_of(self, event_type: str) -> tuple[str, ...]:
        queues = self._targets.get(event_type)
        if queues is None:
            queues = tuple(
                queue
                for queue, patterns in self._bindings.items()
                if any(matches(p, event_type) for p in patterns)
            )
            self._targets[event_type] = queues
        return queues

    def script_arguments(
        self, messages: Sequence[Message], delays: Sequence[int] | None = None
    ) -> tuple[list[str], list[Any]]:
        """``KEYS`` and ``ARGV`` of the publish script for ``messages``; with
        ``delays`` (milliseconds, one per message), of the script that puts them in
        the queues' delayed sets instead."""
        keys: list[str] = [self.keys.version]
        args: list[Any] = [self.version, len(messages)]
        key_of = self.keys.queue if delays is None else self.keys.delayed
        # per event type in this batch: target count, then each target's KEYS index
        routed: dict[str, list[int]] = {}
        index: dict[str, int] = {}
        for number, message in enumerate(messages):
            targets = routed.get(message.type)
            if targets is None:
                queues = self._queues_of(message.type)
                targets = routed[message.type] = [len(queues)]
                for key in map(key_of, queues):
                    if key not in index:
                        keys.append(key)
                        index[key] = len(keys)
                    targets.append(index[key])
            if delays is not None:
                args += (delays[number], message.id)
            args += targets
            if len(targets) > 1:
                fields = encode_fields(message)
                args.append(len(fields))
                args += fields
            else:
                args.append(0)
        return keys, args
