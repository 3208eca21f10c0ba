"""A connection cut off without a close (a pulled cable) is noticed by the client's
pings (``heartbeat=``) and replaced; before the option, nats-py pinged every 120 s
and such a connection stayed silently dead for minutes."""

from __future__ import annotations

import pytest

from herald.testing import eventually

from .support import Relay, connected, nats_url, tick

pytestmark = pytest.mark.nats


async def test_a_half_open_connection_is_noticed_by_the_heartbeat_and_replaced(
    relay: Relay,
) -> None:
    broker = await connected(nats_url(port=relay.port, heartbeat="0.5", timeout="2"))
    try:
        await broker.publish([tick(1)])
        assert relay.connections == 1
        relay.freeze()  # nothing passes any more, and nobody is told
        await eventually(lambda: relay.connections >= 2, 15, "the client to reconnect")
        await eventually(lambda: broker.connected, 15, "the new connection to be up")
        await broker.publish([tick(2)])
    finally:
        await broker.destroy()
        await broker.close()
