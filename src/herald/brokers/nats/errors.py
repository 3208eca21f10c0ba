"""nats-py's exceptions as Herald's, in one table.

>>> import nats.errors
>>> error = TABLE.convert(nats.errors.ConnectionClosedError(), "publishing")
>>> type(error).__name__, str(error)
('ConnectionLostError', 'publishing failed: ConnectionClosedError: nats: connection closed')
>>> str(TABLE.convert(OSError("nats://ada:s3cret@h1:4222 refused"), "connecting"))
'connecting failed: OSError: nats://ada:***@h1:4222 refused'
"""

from __future__ import annotations

import re

import nats.errors
import nats.js.errors

from ...errors import BrokerError, ConnectionLostError, ErrorTable, PublishError

__all__ = ["TABLE", "describe", "is_too_large"]

_USERINFO = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_STREAM_MESSAGE_TOO_LARGE = 10054
"""JetStream's ``JSStreamMessageExceedsMaximumErr``: larger than the stream's max_msg_size."""


def describe(exc: BaseException) -> str:
    """The driver error's class and first line, with any URL password masked."""
    lines = str(exc).strip().splitlines()
    text = _USERINFO.sub(r"\1***@", lines[0]) if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def is_too_large(exc: BaseException) -> bool:
    """Whether JetStream refused a message for its size (the stream's ``max_msg_size``)."""
    return (
        isinstance(exc, nats.js.errors.APIError) and exc.err_code == _STREAM_MESSAGE_TOO_LARGE
    ) or isinstance(exc, nats.errors.MaxPayloadError)


TABLE = ErrorTable(
    [
        (
            (
                nats.errors.ConnectionClosedError,
                nats.errors.ConnectionDrainingError,
                nats.errors.ConnectionReconnectingError,
                nats.errors.StaleConnectionError,
                nats.errors.NoServersError,
                nats.errors.OutboundBufferLimitError,
                nats.errors.TimeoutError,
                nats.js.errors.ServiceUnavailableError,
                TimeoutError,
                OSError,
            ),
            ConnectionLostError,
        ),
        (
            (
                nats.errors.BadHeaderError,
                nats.errors.BadSubjectError,
                nats.errors.MaxPayloadError,
                nats.js.errors.NoStreamResponseError,
            ),
            PublishError,
        ),
        (nats.errors.Error, BrokerError),
    ],
    describe=describe,
)
"""Lost connections and timeouts may be retried; a refused publish is a
:class:`PublishError`; anything else nats-py raises is a :class:`BrokerError`."""
