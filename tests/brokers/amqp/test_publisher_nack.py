"""A nacked publish retires its channel: RabbitMQ 3.x can nack every publish of a
channel whose first publish to a quorum queue asked a leader that had just died
(tests/cluster/test_rabbit_cluster.py), so the next publish must use a new channel.

No server: the connection and its channels are stand-ins that nack or ack."""

from __future__ import annotations

from typing import Any

import pytest
from pamqp import commands as spec

from herald.brokers.amqp.publisher import Outgoing, Publisher
from herald.brokers.amqp.settings import AMQPSettings
from herald.errors import PublishError


class Channel:
    def __init__(self, answer: spec.Basic.Ack | spec.Basic.Nack) -> None:
        self.answer = answer
        self.is_closed = False
        self.published = 0

    async def basic_publish(self, body: bytes, **_: Any) -> spec.Basic.Ack | spec.Basic.Nack:
        self.published += 1
        return self.answer

    async def close(self) -> None:
        self.is_closed = True


class Connection:
    """Hands out a channel that nacks everything, then channels that ack."""

    def __init__(self) -> None:
        self.settings = AMQPSettings.from_url("amqp://localhost/?confirm_timeout=1")
        self.is_connected = True
        self.opened: list[Channel] = []

    async def channel(self, *, confirms: bool = False) -> Channel:
        answer = spec.Basic.Nack(1) if not self.opened else spec.Basic.Ack(1)
        self.opened.append(Channel(answer))
        return self.opened[-1]


def outgoing(n: int) -> Outgoing:
    properties = spec.Basic.Properties(message_id=f"m{n}")
    return Outgoing("events", "tick", b"{}", properties)


async def test_a_nacked_channel_is_replaced_and_closed() -> None:
    connection = Connection()
    publisher = Publisher(connection)  # type: ignore[arg-type]
    with pytest.raises(PublishError, match="m1: nack"):
        await publisher.publish([outgoing(1)])
    await publisher.publish([outgoing(1)])  # the same message, accepted on a new channel
    await publisher.publish([outgoing(2), outgoing(3)])
    nacking, fresh = connection.opened
    assert (nacking.published, fresh.published) == (1, 3)
    await publisher.close()
    assert nacking.is_closed and fresh.is_closed
