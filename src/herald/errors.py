"""Herald's errors: one root, converted from driver errors at the broker edge.

::

    HeraldError
    ├── ConfigurationError          bad settings in code
    │   ├── BrokerURLError          a malformed broker URL; names the part that is wrong
    │   ├── PatternError            a malformed event type or topic pattern (a ValueError too)
    │   └── CapabilityError         the broker lacks an optional capability asked for
    │       └── HorizonError        a message scheduled further ahead than the broker keeps one
    ├── BrokerError                 the broker failed or cannot be reached
    │   ├── ConnectionLostError     the connection dropped; the operation may be retried
    │   └── PublishError            the broker did not confirm a publish (nack, timeout)
    │       └── MessageTooLargeError  refused for good: the message exceeds the broker's limit
    ├── SettleError                 a delivery was settled twice (a bug in the caller)
    ├── MessageError                a message that cannot become an event
    │   ├── DecodeError             bytes that the codec cannot read
    │   ├── ValidationError         decoded data that fails the event's schema
    │   ├── HeaderError             a runtime header (attempt, reply address, ...) is malformed
    │   └── UpcastError             an older version of an event its upcasters cannot convert
    ├── HandlerError                raised on purpose by handlers
    │   └── Reject                  dead-letter this delivery now, without retries
    ├── RemoteError                 an RPC handler failed (herald.rpc)
    ├── ExpectedError               declared RPC errors, re-raised as their class (herald.rpc)
    │   ├── NotFound
    │   └── Invalid                 with ``fields``: field name -> problem
    └── TimeoutError                an operation did not finish in time (a builtin one too)

Errors from the broker drivers never escape Herald's API bare: each adapter
converts them through one :class:`ErrorTable` (``raise ... from exc``), so the
original stays in ``__cause__``.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "BrokerError",
    "BrokerURLError",
    "CapabilityError",
    "ConfigurationError",
    "ConnectionLostError",
    "DecodeError",
    "ErrorTable",
    "HandlerError",
    "HeaderError",
    "HeraldError",
    "HorizonError",
    "MessageError",
    "MessageTooLargeError",
    "PatternError",
    "PublishError",
    "Reject",
    "SettleError",
    "TimeoutError",
    "UpcastError",
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


class PatternError(ConfigurationError, ValueError):
    """An event type or topic pattern is malformed."""


class CapabilityError(ConfigurationError):
    """The broker does not offer an optional capability (dead-letter admin, queue
    inspection, ...) that was asked for."""


class HorizonError(CapabilityError):
    """A message is scheduled further ahead than the broker keeps one
    (``Features.max_schedule_delay``); refused for good, nothing of its batch published."""

    def __init__(self, message_id: str, due_in: float, limit: float, broker: str) -> None:
        self.message_id = message_id
        super().__init__(
            f"message {message_id} is due in {due_in:,.0f}s; {broker} schedules at most "
            f"{limit:,.0f}s ahead"
        )


class BrokerError(HeraldError):
    """The broker failed, refused an operation, or cannot be reached."""


class ConnectionLostError(BrokerError):
    """The connection to the broker was lost; the operation may be retried."""


class PublishError(BrokerError):
    """The broker did not confirm a publish: nothing may be assumed stored."""


class MessageTooLargeError(PublishError):
    """The broker refuses this message for good: it exceeds the broker's size limit."""

    def __init__(self, message_id: str, size: int, limit: int, broker: str) -> None:
        self.message_id = message_id
        self.size = size
        self.limit = limit
        super().__init__(
            f"message {message_id} has a {size:,}-byte body; {broker} accepts at most {limit:,}"
        )


class SettleError(HeraldError):
    """A delivery was settled a second time; the first settlement stands."""


class MessageError(HeraldError):
    """A message that cannot be turned into the event its handler expects."""


class DecodeError(MessageError):
    """The message body cannot be decoded with its content type."""


class ValidationError(MessageError):
    """The decoded body does not satisfy the event's schema."""


class HeaderError(MessageError):
    """A header the runtime reads (attempt count, failure time, reply address) is
    malformed or out of bounds: the message is dead-lettered, never trusted."""


class UpcastError(MessageError):
    """An event of an older version than the handler's class that the class's upcasters
    cannot bring up to date (none registered for a step, or one failed)."""


class HandlerError(HeraldError):
    """Base for errors handlers raise on purpose."""


class Reject(HandlerError):
    """Raise from a handler to dead-letter the delivery at once, without retries."""


class TimeoutError(HeraldError, builtins.TimeoutError):
    """An operation did not complete within its deadline."""


Rule = tuple[type[BaseException] | tuple[type[BaseException], ...], type[HeraldError]]


class ErrorTable:
    """One adapter's translation of driver errors into Herald's, in one place.

    ``rules`` are tried in order; the first whose driver class matches gives the
    Herald class. ``describe`` renders a driver error for humans (adapters pass one
    that redacts credentials). Herald's own errors and cancellations pass unchanged.

    >>> table = ErrorTable([(ConnectionError, ConnectionLostError), (OSError, BrokerError)])
    >>> try:
    ...     with table.converting("publishing"):
    ...         raise ConnectionResetError("peer gone")
    ... except ConnectionLostError as exc:
    ...     print(exc, "|", type(exc.__cause__).__name__)
    publishing failed: ConnectionResetError: peer gone | ConnectionResetError
    """

    __slots__ = ("_describe", "_fallback", "_rules")

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        fallback: type[HeraldError] = BrokerError,
        describe: Callable[[BaseException], str] | None = None,
    ) -> None:
        self._rules = tuple(rules)
        self._fallback = fallback
        self._describe = describe or _describe

    def convert(
        self, exc: BaseException, doing: str, as_: type[HeraldError] | None = None
    ) -> HeraldError:
        """The Herald error for driver error ``exc`` raised while ``doing`` something.

        ``as_`` overrides the table's class unless the rule gives a subclass of it
        (a lost connection during a publish stays a :class:`ConnectionLostError`).
        """
        if isinstance(exc, HeraldError):
            return exc
        kind = self._fallback
        for driver, herald in self._rules:
            if isinstance(exc, driver):
                kind = herald
                break
        if as_ is not None and not issubclass(kind, as_):
            kind = as_
        return kind(f"{doing} failed: {self._describe(exc)}")

    @contextlib.contextmanager
    def converting(self, doing: str, as_: type[HeraldError] | None = None) -> Iterator[None]:
        """Convert any driver error raised in the block (``raise ... from exc``)."""
        try:
            yield
        except HeraldError:
            raise
        except Exception as exc:
            raise self.convert(exc, doing, as_) from exc


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text and text[0] else type(exc).__name__
