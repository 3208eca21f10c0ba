"""Spans around every publish, every handler run and every settlement.

:class:`TracingMiddleware` follows OpenTelemetry's messaging semantic conventions:

- ``send {event type}`` around each publish batch. Each message that has no creation
  context yet gets this span's, as ``traceparent``/``tracestate`` headers (the span
  is then a PRODUCER span); the span links to the creation contexts messages already
  had (events staged in an outbox, see :func:`~herald.tracing.stamp`), and is a
  CLIENT span when every message had one.
- ``process {event type}`` (CONSUMER) around the handler chain of a delivery. It
  links to the message's creation context; with ``parent=True`` it is also that
  context's child, so one trace follows an event through every service it reaches.
- ``{ack|retry|release|dead_letter} {event type}`` (CLIENT, operation type
  ``settle``) around the settlement, a child of the process span.

Lines logged during a process span carry its trace and span id (see
:mod:`herald.logs`), and so does the worker's line about the delivery's outcome.

Without an OpenTelemetry SDK configured the spans cost little and record nothing;
with ``parent=True`` an incoming creation context is still passed on to the messages
a handler publishes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanKind, Status, StatusCode

from ..broker import Delivery
from ..context import Context
from ..deadletter import DeadLetterReason
from ..headers import CORRELATION_ID
from ..message import Message
from ..middleware import Middleware, Next, Outcome, PublishNext
from ..worker import LOG_FIELDS
from . import attributes as attr
from .attributes import messaging_system
from .propagation import creation_context, has_trace_context, inject

__all__ = ["TracingMiddleware", "tracer_for"]

_SCOPE = "herald"
_Attributes = dict[str, Any]
_ROOT = otel_context.Context()
_SHAPES_MAX = 1024
"""Span names and fixed attributes kept per (queue, event type, ...); types seen by a
wildcard pattern come from traffic, so the cache is bounded (cleared when full)."""


def tracer_for(provider: trace.TracerProvider | None = None) -> trace.Tracer:
    """Herald's tracer from ``provider`` (default: the global one, resolved lazily)."""
    return trace.get_tracer(_SCOPE, tracer_provider=provider)


class TracingMiddleware(Middleware):
    """Traces publishes, handler runs and settlements (see the module docstring).

    ``system`` is ``messaging.system`` (:func:`~herald.tracing.messaging_system` of
    the broker URL; :meth:`for_url` does that). ``parent=True`` makes a process span
    the child of the message's creation context, besides linking to it (the
    conventions' opt-in); a publish of one message that already has a creation
    context, outside any span (an outbox relay), then becomes its child too.
    ``settle=False`` leaves out the settle spans (a third of the spans, and of the
    cost, per delivery). ``tracer_provider`` defaults to the global one.
    """

    def __init__(
        self,
        *,
        system: str = "herald",
        parent: bool = False,
        settle: bool = True,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.system = system
        self.parent = parent
        self.settle = settle
        self._tracer = tracer_for(tracer_provider)
        self._shapes: dict[tuple[str, ...], tuple[str, _Attributes]] = {}

    @classmethod
    def for_url(
        cls,
        url: str,
        *,
        parent: bool = False,
        settle: bool = True,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> TracingMiddleware:
        """A middleware whose ``messaging.system`` is that of the broker at ``url``."""
        return cls(
            system=messaging_system(url),
            parent=parent,
            settle=settle,
            tracer_provider=tracer_provider,
        )

    def __repr__(self) -> str:
        return f"TracingMiddleware(system={self.system!r}, parent={self.parent})"

    async def publish(self, messages: Sequence[Message], call_next: PublishNext) -> None:
        created = [
            creation_context(m.headers) if has_trace_context(m.headers) else None for m in messages
        ]
        links = [Link(span) for span in created if span is not None]
        parent = None
        if (
            self.parent
            and len(messages) == 1
            and created[0] is not None
            and not trace.get_current_span().get_span_context().is_valid
        ):
            parent = trace.set_span_in_context(NonRecordingSpan(created[0]))
        types = {m.type for m in messages}
        destination = next(iter(types)) if len(types) == 1 else None
        attributes: _Attributes = {
            attr.SYSTEM: self.system,
            attr.OPERATION_TYPE: "send",
            attr.OPERATION_NAME: "send",
        }
        if destination is not None:
            attributes[attr.DESTINATION] = destination
        if len(messages) == 1:
            attributes.update(_message_attributes(messages[0]))
        else:
            attributes[attr.BATCH_MESSAGE_COUNT] = len(messages)
        name = f"send {destination}" if destination is not None else "send"
        # PRODUCER when the span is some message's creation context, else CLIENT
        kind = SpanKind.PRODUCER if None in created else SpanKind.CLIENT
        with self._tracer.start_as_current_span(
            name, context=parent, kind=kind, attributes=attributes, links=links
        ) as span:
            here = span.get_span_context()
            if here.is_valid and None in created:
                headers = dict(inject({}, here))
                messages = [
                    m if span_context is not None else m.with_headers(headers)
                    for m, span_context in zip(messages, created, strict=True)
                ]
            try:
                await call_next(messages)
            except BaseException as exc:
                span.set_attribute(attr.ERROR_TYPE, type(exc).__qualname__)
                raise

    def _shape(
        self, key: tuple[str, ...], make: Callable[[], tuple[str, _Attributes]]
    ) -> tuple[str, _Attributes]:
        shape = self._shapes.get(key)
        if shape is None:
            if len(self._shapes) >= _SHAPES_MAX:
                self._shapes.clear()
            shape = self._shapes[key] = make()
        return shape

    def _process_shape(self, ctx: Context) -> tuple[str, _Attributes]:
        """The name and fixed attributes of the process spans of ``ctx``'s queue and type."""
        event_type, queue = ctx.message.type, ctx.queue
        patterns = ctx.delivery.subscription.patterns

        def make() -> tuple[str, _Attributes]:
            attributes: _Attributes = {
                attr.SYSTEM: self.system,
                attr.OPERATION_TYPE: "process",
                attr.OPERATION_NAME: "process",
                attr.DESTINATION: event_type,
                attr.SUBSCRIPTION: queue,
                attr.CONSUMER_GROUP: ctx.service,
            }
            if patterns != (event_type,):
                attributes[attr.DESTINATION_TEMPLATE] = ",".join(patterns)
            return f"process {event_type}", attributes

        return self._shape(("process", queue, event_type, *patterns), make)

    async def handle(self, ctx: Context, call_next: Next) -> Outcome:
        message = ctx.message
        created = creation_context(message.headers)
        links = [Link(created)] if created is not None else None
        parent = _ROOT  # a new root, whatever the runner task inherited
        if self.parent and created is not None:
            parent = trace.set_span_in_context(NonRecordingSpan(created), parent)
        name, fixed = self._process_shape(ctx)
        span = self._tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=_with_message(fixed, message),
            links=links,
        )
        if self.settle and span.is_recording():
            ctx.delivery = _TracedDelivery(ctx.delivery, self, span)
        here = span.get_span_context()
        if here.is_valid:
            ctx.state.setdefault(LOG_FIELDS, {}).update(
                trace_id=trace.format_trace_id(here.trace_id),
                span_id=trace.format_span_id(here.span_id),
            )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            outcome = await call_next(ctx)
        except asyncio.CancelledError:  # the worker stopping: it releases the delivery
            span.set_attribute(attr.OUTCOME, "released")
            span.end()
            raise
        except BaseException as exc:
            span.set_attribute(attr.ERROR_TYPE, type(exc).__qualname__)
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
            span.end()
            raise
        finally:
            otel_context.detach(token)
        _record_outcome(span, outcome)
        span.end()
        return outcome

    def settle_span(self, operation: str, delivery: Delivery, parent: Span) -> Span:
        """Start the span of a settlement (``ack``, ``retry``, ...) of ``delivery``."""
        message = delivery.message
        subscription = delivery.subscription

        def make() -> tuple[str, _Attributes]:
            return f"{operation} {message.type}", {
                attr.SYSTEM: self.system,
                attr.OPERATION_TYPE: "settle",
                attr.OPERATION_NAME: operation,
                attr.DESTINATION: message.type,
                attr.SUBSCRIPTION: subscription.queue,
                attr.CONSUMER_GROUP: subscription.service,
            }

        name, fixed = self._shape(
            (operation, subscription.service, subscription.name, message.type), make
        )
        return self._tracer.start_span(
            name,
            context=trace.set_span_in_context(parent, _ROOT),
            kind=SpanKind.CLIENT,
            attributes={**fixed, attr.MESSAGE_ID: message.id},
        )


def _message_attributes(message: Message) -> _Attributes:
    return _with_message({}, message)


def _with_message(fixed: _Attributes, message: Message) -> _Attributes:
    """``fixed`` and the attributes of ``message`` (id, body size, conversation)."""
    found: _Attributes = {
        **fixed,
        attr.MESSAGE_ID: message.id,
        attr.MESSAGE_BODY_SIZE: len(message.body),
    }
    conversation = message.headers.get(CORRELATION_ID)
    if conversation:
        found[attr.CONVERSATION_ID] = conversation[:200]
    return found


def _record_outcome(span: Span, outcome: Outcome) -> None:
    span.set_attribute(attr.OUTCOME, outcome.label)
    if outcome.settlement not in ("retry", "dead_letter"):
        return
    error = outcome.error
    if outcome.reason is not None:
        kind, text = outcome.reason.error_type, outcome.reason.error_message
    elif error is not None:
        kind, text = type(error).__qualname__, str(error)
    else:
        kind, text = "_OTHER", outcome.label
    span.set_attribute(attr.ERROR_TYPE, kind)
    if error is not None:
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {text}"[:200]))


class _TracedDelivery(Delivery):
    """A delivery whose settlement is traced; settles the adapter's delivery inside."""

    __slots__ = ("_inner", "_parent", "_tracing")

    def __init__(self, inner: Delivery, tracing: TracingMiddleware, parent: Span) -> None:
        super().__init__(inner.message, inner.subscription, inner.attempt, error=inner.error)
        self._inner = inner
        self._tracing = tracing
        self._parent = parent

    @property
    def size(self) -> int:
        return self._inner.size

    async def _traced(self, operation: str, settling: Awaitable[None]) -> None:
        span = self._tracing.settle_span(operation, self._inner, self._parent)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await settling
        except BaseException as exc:
            span.set_attribute(attr.ERROR_TYPE, type(exc).__qualname__)
            if isinstance(exc, Exception):  # as trace.use_span records them
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    async def _ack(self) -> None:
        await self._traced("ack", self._inner.ack())

    async def _retry(self, delay: float, headers: Mapping[str, str]) -> None:
        await self._traced("retry", self._inner.retry(delay, headers))

    async def _release(self) -> None:
        await self._traced("release", self._inner.release())

    async def _dead_letter(self, reason: DeadLetterReason) -> None:
        await self._traced("dead_letter", self._inner.dead_letter(reason))
