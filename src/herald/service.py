"""Services: a name and the handlers registered on it with decorators.

>>> import herald
>>> class EmployeeCreated(herald.Event, type="employee.created"):
...     guid: str
>>> payroll = herald.Service("payroll")
>>> @payroll.on(EmployeeCreated)
... async def open_record(event: EmployeeCreated, ctx: herald.Context) -> None:
...     pass
>>> [h.subscription.queue for h in payroll.handlers]
['payroll.employee.created']

What a service publishes is declared on it (``publishes=``), for the AsyncAPI
document (``herald docs asyncapi``); it does not restrict what the handlers may
publish:

>>> employees = herald.Service("employees", publishes=[EmployeeCreated])
>>> [cls.event_type() for cls in employees.publishes]
['employee.created']
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from pydantic import BaseModel

from .broker import MiB, Prefetch, Subscription
from .errors import ConfigurationError
from .event import Event
from .handler import Handler, HandlerFunc
from .middleware import Middleware
from .recurrence import EPOCH, Occurrence, Recurrence
from .retry import RetryPolicy
from .rpc import request_type, rpc_handler
from .topic import validate_pattern

__all__ = ["Handler", "RPCEndpoint", "Service"]

F = TypeVar("F", bound=HandlerFunc)


@dataclass(frozen=True, slots=True)
class RPCEndpoint:
    """A request a service answers: the request class, the reply model (``None``: not
    declared) and the queue requests arrive on."""

    request: type[Event]
    reply: type[BaseModel] | None
    queue: str


def _reply_model(func: HandlerFunc) -> type[BaseModel] | None:
    """The pydantic model ``func`` is annotated to return, if it can be resolved."""
    try:
        returned = typing.get_type_hints(func).get("return")
    except Exception:  # annotations naming what the module cannot resolve
        return None
    return returned if isinstance(returned, type) and issubclass(returned, BaseModel) else None


class Service:
    """A named group of handlers; each handler consumes its own durable queue.

    ``concurrency`` bounds how many handlers of this service run at once; events
    with the same key are handled one after another, in the order received.
    ``prefetch`` (messages, default ``max(4 * concurrency, 32)``) and
    ``prefetch_bytes`` (bytes of body, default 64 MiB) bound what each queue's
    consumer holds unsettled. ``middleware`` runs around this service's handlers
    (inside the bus's own) and around what they publish through ``ctx.publish``.
    ``exclusive=True`` makes one process of the service at a time consume each of
    its queues, the others standing by: ordering per key then holds across
    processes, not only within one. ``publishes`` declares the event classes the
    service publishes (through ``ctx.publish``, an outbox, ...), for its AsyncAPI
    document; nothing else reads it.
    """

    def __init__(
        self,
        name: str,
        *,
        concurrency: int = 16,
        retry: RetryPolicy | None = None,
        prefetch: int | None = None,
        prefetch_bytes: int = 64 * MiB,
        middleware: Sequence[Middleware] = (),
        exclusive: bool = False,
        publishes: Sequence[type[Event]] = (),
    ) -> None:
        if not name or "." in name or "/" in name or " " in name:
            raise ConfigurationError(
                f"invalid service name {name!r}: use letters, digits, '-' or '_' (no dots)"
            )
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
        if (prefetch is not None and prefetch < 1) or prefetch_bytes < 1:
            raise ConfigurationError("prefetch and prefetch_bytes must be >= 1")
        for item in middleware:
            if not isinstance(item, Middleware):
                raise ConfigurationError(f"{item!r} is not a herald.Middleware")
        for event_class in publishes:
            if not (isinstance(event_class, type) and issubclass(event_class, Event)):
                raise ConfigurationError(f"publishes= takes Event subclasses, got {event_class!r}")
            event_class.event_type()  # raises if the class has no event type
        self.name = name
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self.prefetch = prefetch
        self.prefetch_bytes = prefetch_bytes
        self.middleware = tuple(middleware)
        self.exclusive = exclusive
        self.publishes: tuple[type[Event], ...] = tuple(dict.fromkeys(publishes))
        self.handlers: list[Handler] = []
        self.endpoints: list[RPCEndpoint] = []
        self.recurrences: list[Recurrence] = []

    def __repr__(self) -> str:
        return f"Service({self.name!r}, handlers={len(self.handlers)})"

    def prefetch_for(self, concurrency: int) -> Prefetch:
        """The prefetch window of each of this service's consumers."""
        return Prefetch(self.prefetch or max(concurrency * 4, 32), self.prefetch_bytes)

    def rpc(
        self,
        request: type[Event],
        *,
        timeout: float | None = None,
        reply: type[BaseModel] | None = None,
    ) -> Callable[[F], F]:
        """Register a request/reply handler: it takes the request (and optionally the
        context) and returns a pydantic model, the reply. Raise an
        :class:`herald.ExpectedError` subclass (``NotFound``, ``Invalid``, ...) to
        answer with an error the caller catches by class; any other exception
        reaches the caller as :class:`herald.RemoteError`. Requests are not retried.
        ``reply`` names the reply model for the AsyncAPI document when the function's
        return annotation does not.
        """
        if not (isinstance(request, type) and issubclass(request, Event)):
            raise ConfigurationError(f"@{self.name}.rpc() takes an Event subclass, got {request!r}")
        topic = request_type(request.event_type())
        if reply is not None and not (isinstance(reply, type) and issubclass(reply, BaseModel)):
            raise ConfigurationError(f"reply= takes a pydantic model class, got {reply!r}")

        def register(func: F) -> F:
            wants_context = self._check_signature(func)
            subscription = Subscription(self.name, topic, (topic,), exclusive=self.exclusive)
            self._add(
                Handler(
                    rpc_handler(func, request, wants_context),
                    subscription,
                    None,
                    RetryPolicy(attempts=1),
                    timeout,
                    True,
                )
            )
            self.endpoints.append(
                RPCEndpoint(request, reply or _reply_model(func), subscription.queue)
            )
            return func

        return register

    def _check_signature(self, func: HandlerFunc) -> bool:
        if not inspect.iscoroutinefunction(func):
            raise ConfigurationError(f"handler {func!r} must be an async function")
        params = [
            p
            for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not 1 <= len(params) <= 2:
            raise ConfigurationError(
                f"handler {getattr(func, '__qualname__', func)} must take (event) or (event, ctx)"
            )
        return len(params) == 2

    def _add(self, handler: Handler) -> None:
        queue = handler.subscription.queue
        if any(h.subscription.queue == queue for h in self.handlers):
            raise ConfigurationError(
                f"service {self.name!r} already has a handler on queue "
                f"{queue!r}; pass name=... to give this one its own queue"
            )
        self.handlers.append(handler)

    def _policy(self, attempts: int | None, retry: RetryPolicy | None) -> RetryPolicy:
        policy = retry or self.retry
        if attempts is None:
            return policy
        return RetryPolicy(
            attempts=attempts,
            initial_delay=policy.initial_delay,
            multiplier=policy.multiplier,
            max_delay=policy.max_delay,
            jitter=policy.jitter,
        )

    def on(
        self,
        target: type[Event] | str,
        *,
        attempts: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        name: str | None = None,
        exclusive: bool | None = None,
        backfill: bool = False,
        since: datetime | None = None,
    ) -> Callable[[F], F]:
        """Register a handler for an event class, or for a topic pattern.

        With an event class the handler receives the decoded event; with a pattern
        string (``"employee.*"``) it receives the :class:`herald.Message`.
        ``attempts`` overrides the service's retry policy's attempt count;
        ``name`` overrides the queue suffix (default: the event type or pattern);
        ``exclusive`` overrides the service's (one consuming process at a time).
        ``backfill=True`` (or ``since=`` an aware datetime): when the queue is first
        created, it starts with the events the broker retained (all, or those
        published at or after ``since``), ahead of live ones; see
        :mod:`herald.backfill`.
        """
        if isinstance(target, str):
            event_class: type[Event] | None = None
            pattern = validate_pattern(target)
        elif isinstance(target, type) and issubclass(target, Event):
            event_class = target
            pattern = target.event_type()
        else:
            raise ConfigurationError(
                f"@{self.name}.on() takes an Event subclass or a pattern string, got {target!r}"
            )
        if since is not None and (not isinstance(since, datetime) or since.utcoffset() is None):
            raise ConfigurationError(
                f"since= takes an aware datetime (with a time zone), got {since!r}"
            )
        policy = self._policy(attempts, retry)
        subscription = Subscription(
            self.name,
            name or pattern,
            (pattern,),
            exclusive=self.exclusive if exclusive is None else exclusive,
        )

        def register(func: F) -> F:
            wants_context = self._check_signature(func)
            self._add(
                Handler(
                    func, subscription, event_class, policy, timeout, wants_context,
                    backfill or since is not None, since,
                )
            )  # fmt: skip
            return func

        return register

    def every(
        self,
        period: timedelta | float,
        *,
        name: str,
        anchor: datetime | None = None,
        attempts: int | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], F]:
        """Register a handler run once per ``period`` (a timedelta or seconds) across
        every running process of this service; it takes a :class:`herald.Occurrence`.

        Slots start at ``anchor`` (default the Unix epoch, UTC) and every
        ``period`` after. Each process publishes each slot's occurrence with the same
        id (see :mod:`herald.recurrence`), so the handler, claiming it through an
        inbox, runs once per slot however many replicas run; a slot missed while
        none ran fires once when one starts. Its queue is ``<service>.<name>``.

        >>> import herald
        >>> svc = herald.Service("reports")
        >>> @svc.every(3600, name="hourly")
        ... async def report(occurrence: herald.Occurrence, ctx: herald.Context) -> None:
        ...     pass
        >>> [(r.name, r.seconds) for r in svc.recurrences], svc.handlers[0].subscription.queue
        ([('hourly', 3600.0)], 'reports.hourly')
        """
        if not isinstance(period, timedelta):
            period = timedelta(seconds=float(period))
        recurrence = Recurrence(self.name, name, period, anchor or EPOCH)
        subscription = Subscription(
            self.name, name, (recurrence.event_type,), exclusive=self.exclusive
        )
        policy = self._policy(attempts, None)

        def every(func: F) -> F:
            wants_context = self._check_signature(func)
            self._add(Handler(func, subscription, Occurrence, policy, timeout, wants_context))
            self.recurrences.append(recurrence)
            return func

        return every
