"""Herald's errors: one root, converted from driver errors at the broker edge.

::

    HeraldError
    ├── ConfigurationError          bad settings in code
    │   └── BrokerURLError          a malformed broker URL; names the part that is wrong
    ├── BrokerError                 the broker failed or cannot be reached
    │   ├── ConnectionLostError     the connection dropped; the operation may be retried
    │   └── PublishError            the broker did not confirm a publish (nack, timeout)
    ├── MessageError                a message that cannot become an event
    │   ├── DecodeError             bytes that the codec cannot read
    │   └── ValidationError         decoded data that fails the event's schema
    ├── HandlerError                raised on purpose by handlers
    │   └── Reject                  dead-letter this delivery now, without retries
    ├── RemoteError                 an RPC handler failed (herald.rpc)
    ├── ExpectedError               declared RPC errors, re-raised as their class (herald.rpc)
    │   ├── NotFound
    │   └── Invalid                 with ``fields``: field name -> problem
    └── TimeoutError                an operation did not finish in time (a builtin one too)

Errors from the broker drivers never escape Herald's API bare: each adapter
converts them with ``raise ... from exc`` so the original stays in ``__cause__``.
"""

from __future__ import annotations

import builtins

__all__ = [
    "BrokerError",
    "BrokerURLError",
    "ConfigurationError",
    "ConnectionLostError",
    "DecodeError",
    "HandlerError",
    "HeraldError",
    "MessageError",
    "PublishError",
    "Reject",
    "TimeoutError",
    "ValidationError",
]


class HeraldError(Exception):
    """The root of every error Herald raises."""


class ConfigurationError(HeraldError):
    """Herald was configured in a way that cannot work."""


class BrokerURLError(ConfigurationError):
    """A broker URL is malformed; the message names the part that is wrong."""

    def __init__(self, url: str, part: str, problem: str) -> None:
        self.url = url
        self.part = part
        self.problem = problem
        super().__init__(f"invalid broker URL {url!r}: {part}: {problem}")


class BrokerError(HeraldError):
    """The broker failed, refused an operation, or cannot be reached."""


class ConnectionLostError(BrokerError):
    """The connection to the broker was lost; the operation may be retried."""


class PublishError(BrokerError):
    """The broker did not confirm a publish: nothing may be assumed stored."""


class MessageError(HeraldError):
    """A message that cannot be turned into the event its handler expects."""


class DecodeError(MessageError):
    """The message body cannot be decoded with its content type."""


class ValidationError(MessageError):
    """The decoded body does not satisfy the event's schema."""


class HandlerError(HeraldError):
    """Base for errors handlers raise on purpose."""


class Reject(HandlerError):
    """Raise from a handler to dead-letter the delivery at once, without retries."""


class TimeoutError(HeraldError, builtins.TimeoutError):
    """An operation did not complete within its deadline."""
