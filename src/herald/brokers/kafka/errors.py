"""aiokafka's errors as Herald's, in one table.

>>> from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
>>> table = error_table()
>>> type(table.convert(KafkaConnectionError("gone"), "fetching")).__name__
'ConnectionLostError'
>>> type(table.convert(KafkaTimeoutError(), "publishing")).__name__
'TimeoutError'
"""

from __future__ import annotations

from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
)

from ...errors import BrokerError, ConnectionLostError, ErrorTable
from ...errors import TimeoutError as HeraldTimeoutError

__all__ = ["error_table"]


def error_table() -> ErrorTable:
    """The adapter's one translation table (URLs carry no credentials to hide)."""
    return ErrorTable(
        [
            ((KafkaConnectionError, NodeNotReadyError, ConnectionError), ConnectionLostError),
            ((KafkaTimeoutError, RequestTimedOutError, TimeoutError), HeraldTimeoutError),
            ((KafkaError, OSError), BrokerError),
        ],
        fallback=BrokerError,
    )
