"""botocore's errors as Herald's, in one table, described without secrets.

>>> from botocore.exceptions import ClientError, EndpointConnectionError
>>> table = error_table(SQSSettings(secret_key="s3cret"))
>>> lost = table.convert(EndpointConnectionError(endpoint_url="http://h:1"), "receiving")
>>> type(lost).__name__, str(lost)[:50]
('ConnectionLostError', 'receiving failed: EndpointConnectionError: Could n')
>>> gone = ClientError({"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue",
...                               "Message": "no queue s3cret"}}, "ReceiveMessage")
>>> str(table.convert(gone, "receiving")), queue_gone(gone)
('receiving failed: AWS.SimpleQueueService.NonExistentQueue: no queue ***', True)
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from ...errors import BrokerError, ConnectionLostError, ErrorTable
from ...errors import TimeoutError as HeraldTimeoutError
from .settings import SQSSettings

__all__ = ["error_code", "error_table", "queue_gone"]

_GONE = frozenset(
    (
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NotFound",
        "NotFoundException",
    )
)


def error_code(exc: BaseException | None) -> str:
    """The AWS error code of a ``ClientError`` ('' for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def queue_gone(exc: BaseException | None) -> bool:
    """Whether a driver error says that the queue (or topic) does not exist."""
    return error_code(exc) in _GONE


def error_table(settings: SQSSettings) -> ErrorTable:
    """The adapter's one translation table; its descriptions never show the secret key."""

    def describe(exc: BaseException) -> str:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            text = f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}".strip()
        elif isinstance(exc, NoCredentialsError | PartialCredentialsError):
            text = f"{type(exc).__name__}: no usable AWS credentials (URL, environment or profile)"
        else:
            lines = str(exc).strip().splitlines()
            text = f"{type(exc).__name__}: {lines[0]}" if lines and lines[0] else type(exc).__name__
        return settings.scrub(text)

    return ErrorTable(
        [
            ((NoCredentialsError, PartialCredentialsError), BrokerError),
            (
                (EndpointConnectionError, ConnectionClosedError, HTTPClientError, ConnectionError),
                ConnectionLostError,
            ),
            (TimeoutError, HeraldTimeoutError),
            ((ClientError, BotoCoreError), BrokerError),
        ],
        fallback=BrokerError,
        describe=describe,
    )
