"""The conformance suite on standard queues (``fifo=false``, SQS's default).

The suite's own run (tests/brokers/test_conformance.py) uses FIFO queues, where SQS
keeps the order per key. Standard queues order on a best-effort basis and may
deliver a message twice, so the scenarios that check an order cannot hold there and
are left out here, each with its reason; every other scenario runs on them too.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from herald.testing import SCENARIOS, Environment, Scenario

from .conftest import sqs_broker
from .server import shared_endpoint, sqs_url

pytestmark = pytest.mark.sqs

ORDERED = {
    "ordering_per_key_under_concurrency": "standard queues do not keep the order per key",
    "ordering_per_key_under_retries": "standard queues do not keep the order per key",
    "ordering_per_key_across_processes": "standard queues do not keep the order per key",
}
ELSEWHERE = {
    "stream_of_ten_thousand": "run on FIFO queues by the suite; 90 s more on moto",
    "large_message": "SNS takes 256 KiB at most (skipped by the suite too)",
    "broker_restart_under_load_loses_nothing": "moto keeps nothing over a restart",
    "backfill_replays_history_once_then_live": "SQS keeps no history (pinned by the suite)",
}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_scenario_on_standard_queues(scenario: Scenario, tmp_path: Path) -> None:
    reason = ORDERED.get(scenario.name) or ELSEWHERE.get(scenario.name)
    if reason:
        pytest.skip(reason)
    token = uuid.uuid4().hex[:10]
    url = sqs_url(f"s{token}", shared_endpoint(), fifo="false")
    env = Environment(url, tmp_path, token=token)
    assert scenario.skip_reason(await env.features(), sqs_broker(url), env) is None
    try:
        await scenario.run(env)
    finally:
        await env.destroy()
