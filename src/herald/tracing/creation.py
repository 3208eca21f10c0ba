"""A message's creation context, given where it is created rather than sent.

An event staged in a transactional outbox is created inside the transaction (within
the span of whatever request staged it) but sent later by the relay, from another
task or process. :func:`stamp` records the creation there and then: a ``create``
span whose context the message carries in its headers, so the relay's ``send`` span
links to it and consumers link to (or continue) the trace it belongs to.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from ..message import Message
from . import attributes as attr
from .middleware import tracer_for
from .propagation import has_trace_context, inject

__all__ = ["stamp"]


def stamp(
    message: Message,
    *,
    system: str = "herald",
    tracer_provider: trace.TracerProvider | None = None,
) -> Message:
    """``message`` with the context of a new ``create {type}`` span (a child of the
    current span) in its headers; unchanged when it already has a creation context
    or no span is recorded and none is current.

    >>> from herald.message import Message
    >>> stamp(Message(type="employee.created", body=b"{}")).headers  # no SDK, no span
    mappingproxy({})
    """
    if has_trace_context(message.headers):
        return message
    span = tracer_for(tracer_provider).start_span(
        f"create {message.type}",
        kind=SpanKind.PRODUCER,
        attributes={
            attr.SYSTEM: system,
            attr.OPERATION_TYPE: "create",
            attr.OPERATION_NAME: "create",
            attr.DESTINATION: message.type,
            attr.MESSAGE_ID: message.id,
            attr.MESSAGE_BODY_SIZE: len(message.body),
        },
    )
    span.end()
    headers = inject({}, span.get_span_context())
    return message.with_headers(headers) if headers else message
