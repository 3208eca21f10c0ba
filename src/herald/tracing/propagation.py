"""W3C trace context in message headers: the CloudEvents distributed-tracing extension.

A message carries its *creation context* in the ``traceparent`` and ``tracestate``
headers (the extension's attribute names; Herald's headers are a message's extension
attributes, and every broker's wire carries them). They are written and read by
OpenTelemetry's W3C propagator, never formatted by hand. On the way in the names with
a CloudEvents binding prefix (``ce-traceparent``, ``cloudEvents_traceparent``, ...)
are read too, for messages from other CloudEvents producers.

Headers from outside are input: a malformed or oversized ``traceparent`` is ignored
(the message has no creation context), never an error.

>>> from opentelemetry.trace import SpanContext, TraceFlags
>>> parent = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True,
...                      TraceFlags(1))
>>> headers = inject({}, parent)
>>> headers["traceparent"]
'00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'
>>> creation_context(headers).span_id == parent.span_id
True
>>> creation_context({"ce-traceparent": headers["traceparent"]}) is not None
True
>>> creation_context({"traceparent": "00-not-a-trace-01"}) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import NonRecordingSpan, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "MAX_TRACEPARENT",
    "MAX_TRACESTATE",
    "TRACEPARENT",
    "TRACESTATE",
    "creation_context",
    "has_trace_context",
    "inject",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MAX_TRACEPARENT = 128
"""Longest ``traceparent`` read (version 00 takes 55 characters)."""
MAX_TRACESTATE = 512
"""Longest ``tracestate`` read (the W3C limit a propagator must pass on)."""
_PREFIXES = ("", "cloudEvents_", "cloudEvents:", "ce-", "ce_")
_LIMITS = {TRACEPARENT: MAX_TRACEPARENT, TRACESTATE: MAX_TRACESTATE}
_TRACEPARENTS = tuple(prefix + TRACEPARENT for prefix in _PREFIXES)
_PROPAGATOR = TraceContextTextMapPropagator()


class _HeaderGetter(Getter[Mapping[str, str]]):
    """Reads ``traceparent``/``tracestate`` under any CloudEvents prefix, bounded."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        limit = _LIMITS.get(key, MAX_TRACESTATE)
        for prefix in _PREFIXES:
            value = carrier.get(prefix + key)
            if value is not None:
                return [value] if isinstance(value, str) and len(value) <= limit else None
        return None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


class _HeaderSetter(Setter[MutableMapping[str, str]]):
    def set(self, carrier: MutableMapping[str, str], key: str, value: str) -> None:
        carrier[key] = value


_GETTER = _HeaderGetter()
_SETTER = _HeaderSetter()
_READ_MAX = 1024
_read: dict[tuple[str, str | None], SpanContext | None] = {}
"""What the propagator made of the trace headers it read last: every message of a
batch carries the same ones (the batch's ``send`` span), and so does a redelivery."""


def inject(headers: MutableMapping[str, str], span: SpanContext) -> MutableMapping[str, str]:
    """Write ``span`` into ``headers`` as ``traceparent``/``tracestate``; return them.
    An invalid span context writes nothing."""
    carrier = otel_context.Context()
    _PROPAGATOR.inject(headers, trace.set_span_in_context(NonRecordingSpan(span), carrier), _SETTER)
    return headers


def creation_context(headers: Mapping[str, str]) -> SpanContext | None:
    """The span context a message was created in (marked remote), or None when it
    carries none or a malformed one."""
    if not headers:
        return None
    parent = _GETTER.get(headers, TRACEPARENT)
    if parent is None:
        return None
    state = _GETTER.get(headers, TRACESTATE)
    key = (parent[0], state[0] if state else None)
    try:
        return _read[key]
    except KeyError:
        pass
    try:
        extracted = _PROPAGATOR.extract(headers, otel_context.Context(), _GETTER)
    except Exception:  # a propagator must not fail on input; if it does, no context
        span = None
    else:
        found = trace.get_current_span(extracted).get_span_context()
        span = found if found.is_valid else None
    if len(_read) >= _READ_MAX:
        _read.clear()
    _read[key] = span
    return span


def has_trace_context(headers: Mapping[str, str]) -> bool:
    """Whether ``headers`` hold a ``traceparent`` under any accepted name."""
    if not headers:
        return False
    return any(name in headers for name in _TRACEPARENTS)
