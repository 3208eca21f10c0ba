"""Redis driver errors as Herald's, in one table.

>>> from redis.exceptions import ConnectionError, ResponseError
>>> table = error_table("s3cret")
>>> error = table.convert(ConnectionError("lost 'redis://:s3cret@h'"), "acking")
>>> type(error).__name__, str(error)
('ConnectionLostError', "acking failed: ConnectionError: lost 'redis://:***@h'")
>>> type(table.convert(ResponseError("OOM command not allowed"), "publishing")).__name__
'BrokerError'
"""

from __future__ import annotations

from redis import exceptions as rx

from ...errors import BrokerError, ConnectionLostError, ErrorTable
from ...url import redact_url

__all__ = ["error_table"]


def error_table(password: str | None = None) -> ErrorTable:
    """The table for a broker whose password is ``password`` (never shown)."""

    def describe(exc: BaseException) -> str:
        lines = str(exc).strip().splitlines()
        text = lines[0] if lines else ""
        if password:
            text = text.replace(password, "***")
        text = redact_url(text)
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    return ErrorTable(
        [
            # refused for good: retrying with the same credentials will not help
            (
                (rx.AuthenticationError, rx.AuthorizationError, rx.NoPermissionError),
                BrokerError,
            ),
            # includes BusyLoadingError (a restarted server loading its data)
            ((rx.ConnectionError, rx.TimeoutError, OSError, EOFError), ConnectionLostError),
        ],
        fallback=BrokerError,
        describe=describe,
    )
