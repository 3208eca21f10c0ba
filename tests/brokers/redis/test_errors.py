"""The Redis adapter's error table: driver errors to Herald's, credentials never shown."""

from __future__ import annotations

import pytest
from redis import exceptions as rx

from herald.brokers.redis.errors import error_table
from herald.errors import BrokerError, ConnectionLostError, HeraldError, PublishError


@pytest.mark.parametrize(
    ("driver", "herald"),
    [
        (rx.ConnectionError("reset by peer"), ConnectionLostError),
        (rx.TimeoutError("Timeout reading from socket"), ConnectionLostError),
        (rx.BusyLoadingError("Redis is loading the dataset in memory"), ConnectionLostError),
        (ConnectionResetError(104, "reset"), ConnectionLostError),
        (TimeoutError(), ConnectionLostError),
        (rx.AuthenticationError("invalid username-password pair"), BrokerError),
        (rx.NoPermissionError("NOPERM no permissions to run the 'xadd' command"), BrokerError),
        (rx.ResponseError("OOM command not allowed when used memory > 'maxmemory'"), BrokerError),
        (rx.DataError("Invalid input of type: 'dict'"), BrokerError),
    ],
)
def test_driver_errors_become_heralds(driver: Exception, herald: type[HeraldError]) -> None:
    converted = error_table().convert(driver, "reading q")
    assert type(converted) is herald
    assert str(converted).startswith("reading q failed: ")


def test_a_publish_that_failed_is_a_publish_error() -> None:
    converted = error_table().convert(rx.ConnectionError("gone"), "publishing", PublishError)
    assert isinstance(converted, PublishError)


def test_the_password_is_never_shown() -> None:
    table = error_table("pa:ss/w@rd")
    for text in (
        "Error connecting with redis://user:pa:ss/w@rd@host:6379",
        "AUTH pa:ss/w@rd failed",
        "redis://:pa:ss/w@rd@h/0",
    ):
        shown = str(table.convert(rx.ConnectionError(text), "connecting"))
        assert "pa:ss" not in shown and "w@rd" not in shown and "rd@" not in shown, shown
