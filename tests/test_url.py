from __future__ import annotations

import pytest

import herald
from herald.url import DEFAULT_URL, BrokerURL, redact_url, resolve_url


def test_resolve_prefers_argument_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HERALD_BROKER", raising=False)
    assert resolve_url(None) == DEFAULT_URL == "sqlite:///./var/herald.db"
    monkeypatch.setenv("HERALD_BROKER", "memory://env")
    assert resolve_url(None) == "memory://env"
    assert resolve_url("memory://arg") == "memory://arg"


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("127.0.0.1:5672", "scheme"),
        ("pulsar://localhost", "scheme"),
        ("amqp://", "host"),
        ("amqp://guest:pw@host:99999/", "port"),
        ("amqp://guest:pw@host:abc/", "port"),
        ("amqp://guest:pw@:5672/", "host"),
        ("sqlite://", "path"),
        ("memory://x?bogus=1", "query parameter 'bogus'"),
    ],
)
def test_malformed_urls_name_the_wrong_part(url: str, part: str) -> None:
    with pytest.raises(herald.BrokerURLError) as info:
        herald.connect(url)
    assert info.value.part == part
    assert part in str(info.value)
    assert "pw" not in str(info.value), "passwords never appear in errors"


def test_password_is_redacted_everywhere() -> None:
    url = "amqp://user:s3cret@h:5672/v"
    assert redact_url(url) == "amqp://user:***@h:5672/v"
    parsed = BrokerURL.parse(url)
    assert "s3cret" not in str(parsed) and "s3cret" not in repr(parsed)
    assert parsed.password == "s3cret"


def test_options_are_validated_by_type() -> None:
    parsed = BrokerURL.parse("amqp://h/?prefetch=ten&flag=maybe&n=5")
    with pytest.raises(herald.BrokerURLError, match=r"'prefetch'.*not a whole number"):
        parsed.int_option("prefetch", 1)
    with pytest.raises(herald.BrokerURLError, match=r"'flag'.*not a boolean"):
        parsed.bool_option("flag", False)
    assert parsed.int_option("n", 1) == 5
    with pytest.raises(herald.BrokerURLError, match=">= 10"):
        parsed.int_option("n", 1, minimum=10)


def test_cluster_hosts_and_ipv6() -> None:
    parsed = BrokerURL.parse("amqp://[::1]:5672,h2,h3:5673/")
    assert parsed.hosts == (("::1", 5672), ("h2", None), ("h3", 5673))


def test_sqlite_paths() -> None:
    assert BrokerURL.parse("sqlite:///var/h.db").path == "var/h.db"
    assert BrokerURL.parse("sqlite:////abs/h.db").path == "/abs/h.db"
    assert BrokerURL.parse("sqlite:///./var/herald.db?lease=5").query == {"lease": "5"}
