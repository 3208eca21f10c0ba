"""What a handler (and each middleware) gets besides its event.

A :class:`Context` carries the envelope, the attempt, the service and queue, the
decoded payload once decoding ran, and a way to publish follow-up events. It depends
on the small :class:`Publisher` protocol, not on the bus.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from .broker import Delivery
from .codec import CodecRegistry
from .event import Event
from .handler import Handler
from .headers import CAUSATION_ID
from .message import Message
from .schedule import due_headers

E = TypeVar("E", bound=Event)

__all__ = ["Context", "Publisher"]


class Publisher(Protocol):
    """What a context needs to publish: envelopes, a publish pipeline, replies."""

    @property
    def codecs(self) -> CodecRegistry: ...

    def message(
        self,
        event: Event | Message,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """The envelope for ``event``."""

    async def send(self, messages: Sequence[Message]) -> None:
        """Publish envelopes through the publish middleware; return once confirmed."""

    def accepts_reply_address(self, address: str) -> bool:
        """Whether ``address`` (from a request header) is a reply address one may answer."""

    async def send_reply(self, address: str, reply: Message) -> None:
        """Answer a request at the reply address it carried; raises
        :class:`herald.HeaderError` for an address :meth:`accepts_reply_address` refuses."""


class Context:
    """Per-delivery context, passed to handlers as their second argument and to
    every middleware."""

    __slots__ = (
        "_state",
        "attempt",
        "delivery",
        "handler",
        "message",
        "payload",
        "publisher",
        "service",
    )

    def __init__(
        self,
        publisher: Publisher,
        delivery: Delivery,
        handler: Handler,
        service: str,
        *,
        message: Message | None = None,
        attempt: int | None = None,
    ) -> None:
        self.publisher = publisher
        self.delivery = delivery
        self.handler = handler
        self.message = delivery.message if message is None else message
        """The envelope as received (CloudEvents attributes, headers, body), with the
        retry headers of an in-process retry merged in."""
        self.attempt = delivery.attempt if attempt is None else attempt
        """1 on first delivery, 2 on the first retry, and so on."""
        self.service = service
        self.payload: Any = None
        """What the handler is called with: the decoded event (or the message, for a
        pattern handler); set by the decoding middleware."""
        self._state: dict[str, Any] | None = None

    @property
    def queue(self) -> str:
        """The queue the delivery came from, ``<service>.<name>``."""
        return self.delivery.subscription.queue

    @property
    def logger(self) -> logging.Logger:
        """The service's handler logger, ``herald.handler.<service>``."""
        return _handler_logger(self.service)

    @property
    def state(self) -> dict[str, Any]:
        """A dict for middleware to share things with the handler (a session, a span)."""
        if self._state is None:
            self._state = {}
        return self._state

    @property
    def codecs(self) -> CodecRegistry:
        return self.publisher.codecs

    def decode(self, event_class: type[E]) -> E:
        """The message decoded as ``event_class`` (for pattern handlers that see several
        types on one queue), by its version (see :meth:`herald.CodecRegistry.read`);
        raises :class:`herald.MessageError`, which dead-letters the delivery at once."""
        return self.publisher.codecs.read(self.message, event_class)

    async def publish(
        self,
        event: Event | Message,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        at: datetime | None = None,
        delay: timedelta | float | None = None,
    ) -> Message:
        """Publish a follow-up event, carrying this message's id as ``herald-causation-id``;
        ``at``/``delay`` schedule it, as for :meth:`herald.Bus.publish`."""
        merged = {CAUSATION_ID: self.message.id, **(due_headers(headers, at, delay) or {})}
        message = self.publisher.message(event, key=key, headers=merged)
        await self.publisher.send((message,))
        return message


@functools.lru_cache(maxsize=1024)
def _handler_logger(service: str) -> logging.Logger:
    return logging.getLogger(f"herald.handler.{service}")
