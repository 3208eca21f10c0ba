"""Middleware: what runs around every handler call and every publish.

A :class:`Middleware` overrides :meth:`~Middleware.handle`, :meth:`~Middleware.publish`
or both. ``handle`` gets the :class:`~herald.Context` and the rest of the chain, and
returns the delivery's :class:`Outcome`; the worker settles that outcome after the
whole chain returned, so a middleware sees it, may replace it (an inbox whose commit
failed turns an ack into a retry), or may return one without calling on (an inbox
that has seen the message acks it). ``publish`` gets the envelopes of a batch and
may add headers (trace context) before passing them on. ``request`` runs around an
RPC call of the bus (``Bus.request``): it gets the request envelope and returns the
reply, or sees the error the call raised (no reply in time, an error reply).

Order: the bus's middleware, then the service's, then the built-ins —
:class:`RetryMiddleware` (exceptions become a retry or a dead letter by the handler's
policy), :class:`DecodeMiddleware` (bytes become the handler's event) and
:class:`TimeoutMiddleware` (the handler's ``timeout=``) — then the handler.

>>> import asyncio, herald
>>> class Greeted(herald.Event, type="demo.greeted"):
...     name: str
>>> class Timing(herald.Middleware):
...     def __init__(self) -> None:
...         self.seen: list[tuple[str, str]] = []
...     async def handle(self, ctx: herald.Context, call_next: herald.Next) -> herald.Outcome:
...         outcome = await call_next(ctx)
...         self.seen.append((ctx.message.type, outcome.label))
...         return outcome
...     async def publish(self, messages, call_next):  # type: ignore[no-untyped-def]
...         await call_next([m.with_headers({"x-origin": "doctest"}) for m in messages])
>>> timing = Timing()
>>> svc = herald.Service("greeter")
>>> got = []
>>> @svc.on(Greeted)
... async def greet(event: Greeted, ctx: herald.Context) -> None:
...     got.append((event.name, ctx.message.headers["x-origin"]))
>>> async def main() -> None:
...     async with herald.connect("memory://middleware-doctest", middleware=[timing]) as bus:
...         worker = await bus.start(svc)
...         await bus.publish(Greeted(name="Ada"))
...         while not timing.seen:
...             await asyncio.sleep(0.01)
...         await worker.stop()
>>> asyncio.run(main()); got, timing.seen
([('Ada', 'doctest')], [('demo.greeted', 'acked')])
"""

from __future__ import annotations

import asyncio
import builtins
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TypeVar

from .broker import Settlement
from .context import Context
from .deadletter import DeadLetterReason
from .errors import HeaderError, MessageError, Reject, TimeoutError
from .headers import FIRST_FAILURE, LAST_ERROR, first_failure_of
from .message import Message

__all__ = [
    "ACK",
    "DecodeMiddleware",
    "Middleware",
    "Next",
    "Outcome",
    "PublishNext",
    "RequestNext",
    "RetryMiddleware",
    "TimeoutMiddleware",
    "dead_letter",
    "failure",
    "handler_chain",
    "handling",
    "publish_chain",
    "request_chain",
    "shutting_down",
]

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_LABELS: dict[Settlement, str] = {
    "ack": "acked",
    "retry": "retried",
    "release": "released",
    "dead_letter": "dead-lettered",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What becomes of a delivery: the worker settles it this way.

    ``delay`` and ``headers`` go with a retry, ``reason`` with a dead letter; ``error``
    is the exception that led here, if any.
    """

    settlement: Settlement
    delay: float = 0.0
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)
    reason: DeadLetterReason | None = None
    error: BaseException | None = None

    @property
    def label(self) -> str:
        """``acked``, ``retried``, ``released`` or ``dead-lettered`` (for logs and metrics)."""
        return _LABELS[self.settlement]


ACK = Outcome("ack")
RELEASE = Outcome("release")

Next = Callable[[Context], Awaitable[Outcome]]
PublishNext = Callable[[Sequence[Message]], Awaitable[None]]
RequestNext = Callable[[Message], Awaitable[Message]]
_Call = TypeVar("_Call", Next, PublishNext, RequestNext)


class Middleware:
    """Base class of middleware; override :meth:`handle`, :meth:`publish`,
    :meth:`request`, or several.

    A method left as inherited costs nothing: it is not put in the chain.
    """

    async def handle(self, ctx: Context, call_next: Next) -> Outcome:
        """Run around a handler call; return the outcome (normally ``call_next``'s)."""
        return await call_next(ctx)

    async def publish(self, messages: Sequence[Message], call_next: PublishNext) -> None:
        """Run around a publish of ``messages`` (a batch); pass on what is to be sent."""
        await call_next(messages)

    async def request(self, message: Message, call_next: RequestNext) -> Message:
        """Run around an RPC call sending ``message``; return the reply (an error
        reply raises its error out of ``call_next``)."""
        return await call_next(message)


def _chain(middleware: Sequence[Middleware], terminal: _Call, hook: str) -> _Call:
    """``terminal`` wrapped by the ``hook`` method of each middleware that overrides it,
    first outermost (one that does not override it adds no frame)."""
    call = terminal
    for item in reversed(middleware):
        if getattr(type(item), hook) is not getattr(Middleware, hook):
            call = functools.partial(getattr(item, hook), call_next=call)
    return call


def handler_chain(middleware: Sequence[Middleware], terminal: Next) -> Next:
    """``terminal`` wrapped by the ``handle`` of each middleware, first outermost."""
    return _chain(middleware, terminal, "handle")


def publish_chain(middleware: Sequence[Middleware], terminal: PublishNext) -> PublishNext:
    """``terminal`` wrapped by the ``publish`` of each middleware, first outermost."""
    return _chain(middleware, terminal, "publish")


def request_chain(middleware: Sequence[Middleware], terminal: RequestNext) -> RequestNext:
    """``terminal`` wrapped by the ``request`` of each middleware, first outermost."""
    return _chain(middleware, terminal, "request")


def shutting_down() -> bool:
    """Whether the current task is being cancelled from outside (a worker stopping),
    as opposed to a handler's own awaitable raising ``CancelledError``."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def dead_letter(
    ctx: Context, error_type: str, text: str, error: BaseException | None = None
) -> Outcome:
    """Dead-letter now, with the reason."""
    try:
        first = first_failure_of(ctx.message.headers)
    except HeaderError:
        first = None
    reason = DeadLetterReason(
        queue=ctx.queue,
        error_type=error_type,
        error_message=text,
        attempts=ctx.attempt,
        first_failure=first,
        last_failure=datetime.now(UTC),
    )
    return Outcome("dead_letter", reason=reason, error=error)


def failure(ctx: Context, exc: BaseException) -> Outcome:
    """The outcome of a handler (or middleware) that raised ``exc``: dead-letter at once
    for :class:`herald.Reject` and bad messages, else retry by the handler's policy
    until its attempts are spent."""
    if isinstance(exc, Reject):
        return dead_letter(ctx, "Reject", str(exc) or "rejected by handler", exc)
    if isinstance(exc, MessageError):
        return dead_letter(ctx, type(exc).__name__, str(exc), exc)
    policy = ctx.handler.retry
    text = str(exc) or type(exc).__doc__ or ""
    if ctx.attempt >= policy.attempts:
        return dead_letter(ctx, type(exc).__name__, text, exc)
    first = ctx.message.headers.get(FIRST_FAILURE) or datetime.now(UTC).isoformat()
    headers = {FIRST_FAILURE: first, LAST_ERROR: f"{type(exc).__name__}: {text}"[:1000]}
    return Outcome("retry", policy.delay(ctx.attempt), headers, error=exc)


def _refusal(ctx: Context) -> Outcome | None:
    """The dead letter of a delivery no handler may see (undecodable, a malformed
    runtime header, delivered more often than the handler's attempts allow), or None."""
    error = ctx.delivery.error
    if error is not None:
        return dead_letter(ctx, type(error).__name__, str(error), error)
    attempts = ctx.handler.retry.attempts
    if ctx.attempt > attempts:
        return dead_letter(
            ctx,
            "DeliveryLimitExceeded",
            f"delivered {ctx.attempt} times without being settled (limit {attempts}); "
            "the consumer may have crashed while handling it",
        )
    headers = ctx.message.headers
    if headers and FIRST_FAILURE in headers:
        try:
            first_failure_of(headers)
        except HeaderError as exc:
            return dead_letter(ctx, "HeaderError", str(exc), exc)
    return None


def _decode_payload(ctx: Context) -> None:
    """Set ``ctx.payload``: the message as the handler's event class, by its version
    (the message itself for a pattern handler); raises :class:`herald.MessageError`."""
    event_class = ctx.handler.event_class
    if event_class is None:
        ctx.payload = ctx.message
    else:
        ctx.payload = ctx.publisher.codecs.read(ctx.message, event_class)


async def _within_timeout(ctx: Context, call_next: Next) -> Outcome:
    """``call_next(ctx)`` bounded by the handler's ``timeout=``; running out raises
    :class:`herald.TimeoutError`."""
    limit = ctx.handler.timeout
    if limit is None:
        return await call_next(ctx)
    scope = asyncio.timeout(limit)
    try:
        async with scope:
            return await call_next(ctx)
    except builtins.TimeoutError as exc:
        if scope.expired():
            raise TimeoutError(
                f"handler {ctx.handler.name} did not finish within {limit:g}s"
            ) from exc
        raise


class RetryMiddleware(Middleware):
    """The handling policy: deliveries that cannot be handled are dead-lettered before
    any handler runs (undecodable, malformed runtime headers, delivered more often
    than the handler's attempts allow); an exception becomes a retry with backoff or,
    with the attempts spent, a dead letter. A ``CancelledError`` the handler raised
    itself is a failure like any other; only a stopping worker's cancellation passes.
    """

    async def handle(self, ctx: Context, call_next: Next) -> Outcome:
        refused = _refusal(ctx)
        if refused is not None:
            return refused
        try:
            return await call_next(ctx)
        except asyncio.CancelledError as exc:
            if shutting_down():
                raise
            return failure(ctx, exc)
        except Exception as exc:
            return failure(ctx, exc)


class DecodeMiddleware(Middleware):
    """Sets ``ctx.payload``: the message decoded as the handler's event class, by its
    version (the message itself for a pattern handler). Bytes that do not decode, a
    malformed version header or an older version the upcasters cannot convert raise
    :class:`herald.MessageError`, which the retry policy dead-letters at once."""

    async def handle(self, ctx: Context, call_next: Next) -> Outcome:
        _decode_payload(ctx)
        return await call_next(ctx)


class TimeoutMiddleware(Middleware):
    """Bounds the rest of the chain by the handler's ``timeout=`` (seconds); running
    out raises :class:`herald.TimeoutError`, retried like any failure."""

    async def handle(self, ctx: Context, call_next: Next) -> Outcome:
        return await _within_timeout(ctx, call_next)


async def _call(ctx: Context) -> Outcome:
    handler = ctx.handler
    if handler.wants_context:
        await handler.func(ctx.payload, ctx)
    else:
        await handler.func(ctx.payload)
    return ACK


def handling(started: Callable[[Context], None]) -> Next:
    """The handler call, wrapped by what :class:`RetryMiddleware`,
    :class:`DecodeMiddleware` and :class:`TimeoutMiddleware` do, in this order, as one
    coroutine per delivery rather than a frame each (the worker's innermost chain).
    ``started(ctx)`` is called once the payload is decoded, just before the handler."""

    async def handle(ctx: Context) -> Outcome:
        refused = _refusal(ctx)
        if refused is not None:
            return refused
        try:
            _decode_payload(ctx)
            started(ctx)
            handler = ctx.handler
            if handler.timeout is not None:
                return await _within_timeout(ctx, _call)
            if handler.wants_context:
                await handler.func(ctx.payload, ctx)
            else:
                await handler.func(ctx.payload)
            return ACK
        except asyncio.CancelledError as exc:
            if shutting_down():
                raise
            return failure(ctx, exc)
        except Exception as exc:
            return failure(ctx, exc)

    return handle
