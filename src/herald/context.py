"""What a handler gets besides its event: the envelope, the attempt, a way to publish."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

from .event import Event
from .message import Message

if TYPE_CHECKING:
    from .bus import Bus

E = TypeVar("E", bound=Event)

__all__ = ["Context"]


class Context:
    """Per-delivery context passed to handlers as their second argument."""

    __slots__ = ("_bus", "attempt", "logger", "message", "queue", "service")

    def __init__(self, bus: Bus, message: Message, attempt: int, service: str, queue: str) -> None:
        self._bus = bus
        self.message = message
        """The envelope as received (CloudEvents attributes, headers, body)."""
        self.attempt = attempt
        """1 on first delivery, 2 on the first retry, and so on."""
        self.service = service
        self.queue = queue
        self.logger = _handler_logger(service)

    def decode(self, event_class: type[E]) -> E:
        """The message decoded as ``event_class`` (for pattern handlers that see several
        types on one queue); raises :class:`herald.DecodeError` or
        :class:`herald.ValidationError`, which dead-letter the delivery at once."""
        message = self.message
        return self._bus.codecs.decode(message.body, message.datacontenttype, event_class)

    async def publish(
        self,
        event: Event | Message,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Publish a follow-up event, carrying this message's id as ``herald-causation-id``."""
        merged = {"herald-causation-id": self.message.id, **(headers or {})}
        return await self._bus.publish(event, key=key, headers=merged)


@functools.lru_cache(maxsize=1024)
def _handler_logger(service: str) -> logging.Logger:
    return logging.getLogger(f"herald.handler.{service}")
