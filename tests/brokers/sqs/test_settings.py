"""URL parsing: every part checked, the secret never shown."""

from __future__ import annotations

import pytest

from herald.brokers.sqs import SQSBroker, SQSSettings
from herald.errors import BrokerURLError


def test_defaults_are_aws_defaults() -> None:
    s = SQSSettings.from_url("sqs://us-east-1")
    assert (s.endpoint, s.fifo, s.visibility, s.wait, s.retention, s.dlq_retention) == (
        None, False, 30, 20, 1_209_600, 1_209_600,
    )  # fmt: skip
    assert s.access_key is None and s.shown_url == "sqs://us-east-1"


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("sqs://", "host"),
        ("sqs://us-east-1:443", "host"),
        ("sqs://not_a_region", "host"),
        ("sqs://us-east-1/queue", "path"),
        ("sqs://key@us-east-1", "userinfo"),
        ("sqs://us-east-1?endpoint=ftp://h", "'endpoint'"),
        ("sqs://us-east-1?namespace=a.b", "'namespace'"),
        ("sqs://us-east-1?visibility=0", "'visibility'"),
        ("sqs://us-east-1?visibility=43201", "'visibility'"),
        ("sqs://us-east-1?wait=21", "'wait'"),
        ("sqs://us-east-1?dlq_retention=0", "'dlq_retention'"),
        ("sqs://us-east-1?retention=1209601", "'retention'"),
        ("sqs://us-east-1?fifo=maybe", "'fifo'"),
        ("sqs://us-east-1?visiblity=3", "'visiblity'"),
    ],
)
def test_wrong_parts_are_named(url: str, part: str) -> None:
    with pytest.raises(BrokerURLError) as caught:
        SQSSettings.from_url(url)
    assert part in caught.value.part


def test_dlq_retention_zero_says_sqs_keeps_nothing_for_ever() -> None:
    with pytest.raises(BrokerURLError, match="for ever"):
        SQSSettings.from_url("sqs://us-east-1?dlq_retention=0")


def test_secret_is_never_shown() -> None:
    broker = SQSBroker.from_url("sqs://AKID:pa55word@eu-west-1?endpoint=http://127.0.0.1:1")
    assert "pa55word" not in repr(broker) and "pa55word" not in broker.url
    assert "pa55word" not in repr(broker.settings)
    assert broker.settings.scrub("denied for pa55word") == "denied for ***"
