"""The adapter's own logic, without a server: offsets under out-of-order completion,
records with bad headers, URLs, topic names and the exclusive assignor."""

from __future__ import annotations

import random
import re
import struct

import pytest

from herald.brokers.kafka.consumer import Oldest
from herald.brokers.kafka.offsets import OffsetTracker
from herald.brokers.kafka.settings import KafkaSettings
from herald.brokers.kafka.topology import Names, tier_for
from herald.brokers.kafka.wire import DUE, decode, encode
from herald.errors import BrokerURLError, DecodeError, HeaderError
from herald.message import Message
from herald.topic import matches


def test_commit_stays_below_the_lowest_unfinished_offset_in_any_completion_order() -> None:
    rng = random.Random(7)
    for _ in range(50):
        tracker = OffsetTracker()
        tickets = [tracker.fetched(("t", 0), offset) for offset in range(100, 140)]
        finished: set[int] = set()
        for ticket in rng.sample(tickets, len(tickets)):
            tracker.finish(ticket)
            finished.add(ticket.offset)
            lowest_unfinished = min(set(range(100, 140)) - finished, default=140)
            position = tracker.committable().get(("t", 0))
            if position is not None:
                assert position == lowest_unfinished
                tracker.mark_committed({("t", 0): position})
        assert tracker.unfinished() == 0


def test_partitions_are_tracked_apart_and_a_revoked_one_no_longer_counts() -> None:
    tracker = OffsetTracker()
    a = tracker.fetched(("t", 0), 5)
    b = tracker.fetched(("t", 1), 9)
    tracker.forget([("t", 0)])
    again = tracker.fetched(("t", 0), 5)  # the new owner's fetch of the same record
    assert tracker.finish(a) is False, "a settlement from before the rebalance"
    assert tracker.finish(b) is True
    assert tracker.committable() == {("t", 0): 5, ("t", 1): 10}, "nothing past the refetch"
    assert tracker.unfinished() == 1
    tracker.finish(again)
    assert tracker.committable() == {("t", 0): 6, ("t", 1): 10}


def test_a_record_counted_but_never_handed_out_is_neither_waited_for_nor_committed() -> None:
    """A consumer stopped while waiting for room to hand out a record it had counted:
    its drain waits for nothing more, and the commit stops at that record."""
    tracker = OffsetTracker()
    first = tracker.fetched("p", 10)
    last = tracker.fetched("p", 11)
    tracker.unfetched(last)
    assert tracker.unfinished() == 1
    tracker.finish(first)
    assert tracker.unfinished() == 0
    assert tracker.committable() == {"p": 11}


def test_a_record_round_trips_with_the_cloudevents_kafka_binding() -> None:
    message = Message(type="employee.created", body=b"{}", subject="k1", headers={"x": "y"})
    key, headers = encode(message, attempt=3, due=1234)
    names = [name for name, _ in headers]
    assert key == b"k1" and "ce_id" in names and "content-type" in names
    decoded = decode(key, headers, b"{}", "employee.created", retried=True)
    assert decoded.message == message and decoded.attempt == 3 and decoded.due == 1234
    assert decode(key, headers, b"{}", "employee.created").due == 0, "due only on retry topics"


def test_a_foreign_record_takes_its_key_as_subject_and_its_topic_as_type() -> None:
    decoded = decode(b"g7", [], b"{}", "employee.created")
    assert decoded.error is None
    assert (decoded.message.type, decoded.message.subject) == ("employee.created", "g7")


@pytest.mark.parametrize(
    ("headers", "error", "names"),
    [
        ([("ce_type", b"\xff\xfe")], DecodeError, "UTF-8"),
        ([("herald-attempt", b"-5")], HeaderError, "herald-attempt"),
        ([("herald-attempt", b"\xff")], HeaderError, "herald-attempt"),
        ([(DUE, b"soon")], HeaderError, DUE),
        ([("content-type", b"\xff")], HeaderError, "content-type"),
        ([("ce_time", b"yesterday")], DecodeError, "CloudEvents"),
    ],
)
def test_bad_headers_give_a_delivery_with_the_error_naming_them(
    headers: list[tuple[str, bytes]], error: type[Exception], names: str
) -> None:
    decoded = decode(None, headers, b"raw", "employee.created", retried=True)
    assert isinstance(decoded.error, error) and names in str(decoded.error)
    assert decoded.message.type == "employee.created" and decoded.message.body == b"raw"


def test_a_record_without_a_type_anywhere_is_undecodable() -> None:
    decoded = decode(None, [], b"x", None)
    assert isinstance(decoded.error, DecodeError) and decoded.message.type == "herald.undecodable"


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("kafka://", "host"),
        ("kafka://user:secret@h", "userinfo"),
        ("kafka://h/path", "path"),
        ("kafka://h?partitions=0", "partitions"),
        ("kafka://h?replication=x", "replication"),
        ("kafka://h?namespace=a.b", "namespace"),
        ("kafka://h?session_timeout=10", "session_timeout"),
        ("kafka://h?idempotent=maybe", "idempotent"),
        ("kafka://h?colour=red", "colour"),
    ],
)
def test_bad_urls_name_the_part_that_is_wrong(url: str, part: str) -> None:
    with pytest.raises(BrokerURLError) as caught:
        KafkaSettings.from_url(url)
    assert part in str(caught.value)
    assert "secret" not in str(caught.value)


def test_a_url_sets_the_topic_shape_and_defaults_the_port() -> None:
    s = KafkaSettings.from_url("kafka://a,b:9093?partitions=12&replication=3&dlq_retention=0")
    assert s.bootstrap == "a:9092,b:9093"
    assert (s.partitions, s.replication, s.dlq_retention) == (12, 3, 0)
    assert (s.fetch_wait, s.ack_commits) == (100, False)
    tuned = KafkaSettings.from_url("kafka://a?fetch_wait=20&ack_commits=true")
    assert (tuned.fetch_wait, tuned.ack_commits) == (20, True)
    with pytest.raises(BrokerURLError, match="fetch_wait"):
        KafkaSettings.from_url("kafka://a?fetch_wait=0")


@pytest.mark.parametrize(
    "pattern", ["employee.*", "employee.#", "#", "#.created", "a.#.b", "*.*", "a.#.#.b"]
)
def test_subscription_regex_takes_every_topic_a_matching_type_is_in(pattern: str) -> None:
    names = Names("ns")
    regex = re.compile(names.subscription_regex((pattern,), "svc.q"))
    types = ["employee", "employee.created", "employee.created.v2", "a.b", "a.x.b", "a.x.y.b",
             "x.created", "created", "a", "b.a"]  # fmt: skip
    for event_type in types:
        if matches(pattern, event_type):
            assert regex.fullmatch(names.events(event_type)), event_type
    if not pattern.startswith(("*", "#")):  # a literal first word: that family's topic only
        assert not regex.fullmatch(names.events("zzz.created"))
    assert not regex.fullmatch(names.events("herald.reply." + "0" * 32))
    assert regex.fullmatch(names.retry("svc.q", 0))
    assert not regex.fullmatch(names.retry("svc.other", 0))
    assert not regex.fullmatch(names.dead_letters("svc"))


def test_long_names_stay_within_kafka_topic_limits() -> None:
    names = Names("ns")
    queue = "svc." + "w" * 250
    assert len(names.retry(queue, 3_600_000)) <= 249
    assert names.retry(queue, 0) != names.retry("svc." + "w" * 249 + "v", 0)


def test_retry_delays_fall_in_the_smallest_tier_that_holds_them() -> None:
    assert [tier_for(d) for d in (0, 0.001, 1, 1.5, 59, 601, 10**6)] == [
        0, 1000, 1000, 10000, 60000, 3600000, 3600000
    ]  # fmt: skip


def test_the_exclusive_assignor_gives_everything_to_the_longest_standing_member() -> None:
    class Cluster:
        def partitions_for_topic(self, topic: str) -> set[int]:
            return {0, 1, 2}

    def member(started: float) -> object:
        return Oldest.metadata.__func__(  # type: ignore[attr-defined]
            type("M", (Oldest,), {"started": started}), ["t"]
        )

    members = {"b-late": member(20.0), "a-early": member(10.0), "c-later": member(30.0)}
    assignment = Oldest.assign(Cluster(), members)  # type: ignore[arg-type]
    assert assignment["a-early"].assignment == [("t", [0, 1, 2])]
    assert assignment["b-late"].assignment == [] and assignment["c-later"].assignment == []
    assert struct.unpack(">d", members["a-early"].user_data)[0] == 10.0  # type: ignore[attr-defined]


def test_one_keys_events_of_a_family_share_a_topic_and_replies_keep_their_own() -> None:
    names = Names("ns")
    lifecycle = {names.events(t) for t in ("employee.created", "employee.updated", "employee")}
    assert lifecycle == {"ns.herald.events.employee"}
    assert names.events("employees.create") == "ns.herald.events.employees"
    reply = "herald.reply." + "0" * 32
    assert names.events(reply) == f"ns.herald.events.{reply}"
    assert names.events("rpc.employees.get") == "ns.herald.events.rpc.employees.get"
    assert names.pattern_topic("employee.*") == "ns.herald.events.employee"
    assert names.pattern_topic(reply) == names.events(reply)
    assert names.pattern_topic("*.created") is None and names.pattern_topic("#") is None
