"""aiormq's (and the management API's) errors as Herald's, described without secrets.

>>> table = error_table(AMQPSettings.from_url("amqp://guest:s3cret@h"))
>>> exc = aiormq.ChannelPreconditionFailed("PRECONDITION_FAILED - user guest:s3cret")
>>> str(table.convert(exc, "declaring payroll.dlq"))
'declaring payroll.dlq failed: ChannelPreconditionFailed: PRECONDITION_FAILED - user guest:***'
>>> too_large(aiormq.ChannelPreconditionFailed(
...     "PRECONDITION_FAILED - message size 2097152 is larger than configured max size 1048576"))
(2097152, 1048576)
"""

from __future__ import annotations

import re
import urllib.error

import aiormq

from ...errors import BrokerError, ConnectionLostError, ErrorTable, PublishError, Rule
from ...errors import TimeoutError as HeraldTimeoutError
from .settings import AMQPSettings

__all__ = ["consumer_timed_out", "describe", "error_table", "too_large"]

_TOO_LARGE = re.compile(r"message size (\d+) is larger than configured max size (\d+)")
_CONSUMER_TIMEOUT = re.compile(r"delivery acknowledgement on channel \d+ timed out")

_RULES: list[Rule] = [
    ((aiormq.AuthenticationError, aiormq.ProbableAuthenticationError), BrokerError),
    (urllib.error.HTTPError, BrokerError),
    (
        (aiormq.AMQPConnectionError, aiormq.ChannelInvalidStateError, ConnectionError),
        ConnectionLostError,
    ),
    (aiormq.DeliveryError, PublishError),
    (TimeoutError, HeraldTimeoutError),
]


def error_table(settings: AMQPSettings) -> ErrorTable:
    """The adapter's one translation table; its descriptions mask every password."""
    return ErrorTable(_RULES, describe=lambda exc: describe(exc, settings))


def describe(exc: BaseException, settings: AMQPSettings | None = None) -> str:
    """A one-line, credential-free account of a driver error."""
    if isinstance(exc, aiormq.AuthenticationError | aiormq.ProbableAuthenticationError):
        text = "authentication failed (wrong username or password?)"
    elif isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
        if exc.code == 401:
            text += " (wrong management username or password?)"
    elif isinstance(exc, urllib.error.URLError):
        text = f"cannot reach the management API: {exc.reason}"
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    elif isinstance(exc, aiormq.AMQPError) and exc.args:
        text = " ".join(str(arg) for arg in exc.args if not isinstance(arg, bytes))
        text = f"{type(exc).__name__}: {text}"
    else:
        first = str(exc).strip().splitlines()
        text = f"{type(exc).__name__}: {first[0]}" if first and first[0] else type(exc).__name__
    return settings.scrub(text) if settings is not None else text


def too_large(exc: BaseException | None) -> tuple[int, int] | None:
    """(size, server limit) when the server closed a channel over a too large message."""
    if isinstance(exc, aiormq.ChannelPreconditionFailed):
        match = _TOO_LARGE.search(" ".join(str(arg) for arg in exc.args))
        if match:
            return int(match[1]), int(match[2])
    return None


def consumer_timed_out(exc: BaseException | None) -> bool:
    """Whether RabbitMQ closed a consumer's channel for holding a delivery longer
    than its ``consumer_timeout``."""
    return isinstance(exc, aiormq.ChannelPreconditionFailed) and bool(
        _CONSUMER_TIMEOUT.search(" ".join(str(arg) for arg in exc.args))
    )
