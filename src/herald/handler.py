"""A registered handler: the function, the queue it consumes, and how it is run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .broker import Subscription
from .event import Event
from .retry import RetryPolicy

__all__ = ["Handler", "HandlerFunc"]

HandlerFunc = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Handler:
    """One registered handler and the queue it consumes.

    ``event_class`` is what the message is decoded as (``None``: the handler takes
    the :class:`herald.Message` itself); ``retry`` and ``timeout`` are its policy.
    ``backfill``: when its queue is first created, it starts with the broker's
    retained history (from ``since``; ``None``: the oldest retained).
    """

    func: HandlerFunc
    subscription: Subscription
    event_class: type[Event] | None
    retry: RetryPolicy
    timeout: float | None
    wants_context: bool
    backfill: bool = False
    since: datetime | None = None

    @property
    def name(self) -> str:
        return getattr(self.func, "__qualname__", repr(self.func))
