"""Every broker through the one conformance suite (herald.testing.SCENARIOS).

What does not apply to a broker is pinned here with its reason, and reported as a
skip: a scenario can never drop out of the suite unnoticed.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from herald.brokers import broker_from_url
from herald.testing import SCENARIOS, Environment, Scenario

from ..servers import SPECS, BrokerSpec

NOT_APPLICABLE = {
    "memory": {
        "consumer_killed_mid_stream_loses_nothing": "lives in one process",
        "ordering_per_key_across_processes": "lives in one process",
        "broker_restart_under_load_loses_nothing": "no restart hook",
        "backfill_replays_history_once_then_live": "keeps no history",
    },
    "sqlite": {"broker_restart_under_load_loses_nothing": "no restart hook"},
    "amqp": {},
    "nats": {"large_message": "bodies of at most"},
    "redis": {
        "broker_restart_under_load_loses_nothing": "no restart hook",
        "backfill_replays_history_once_then_live": "keeps no history",
    },
    "sqs": {
        "large_message": "bodies of at most",
        "broker_restart_under_load_loses_nothing": "no restart hook",
        "backfill_replays_history_once_then_live": "keeps no history",
    },
    "kafka": {
        "large_message": "bodies of at most",
        "broker_restart_under_load_loses_nothing": "no restart hook",
    },
}
"""Per broker: the scenarios that do not apply, and a fragment of the reason why."""

URL_OPTIONS = {("amqp", "backfill_replays_history_once_then_live"): "&retain=1h"}
"""Options only some scenarios need: RabbitMQ's history stream would cost every other
scenario a stream declared, written and deleted."""

CASES = [
    pytest.param(
        spec,
        scenario,
        id=f"{spec.scheme}-{scenario.name}",
        marks=[pytest.mark.restart] if spec.restart and "restart" in scenario.name else [],
    )
    for spec in SPECS
    for scenario in SCENARIOS
]


def test_every_broker_has_its_expectations_pinned() -> None:
    assert set(NOT_APPLICABLE) == {spec.scheme for spec in SPECS}
    names = {scenario.name for scenario in SCENARIOS}
    for scheme, skipped in NOT_APPLICABLE.items():
        assert set(skipped) <= names, f"{scheme}: unknown scenarios {set(skipped) - names}"


@pytest.mark.parametrize(("spec", "scenario"), CASES)
async def test_scenario(spec: BrokerSpec, scenario: Scenario, tmp_path: Path) -> None:
    spec.require()
    token = uuid.uuid4().hex[:10]
    url = spec.make_url(token, tmp_path) + URL_OPTIONS.get((spec.scheme, scenario.name), "")
    env = Environment(url, tmp_path, spec.restart, token=token)
    try:
        reason = scenario.skip_reason(await env.features(), broker_from_url(env.url), env)
        expected = NOT_APPLICABLE[spec.scheme].get(scenario.name)
        if expected is None:
            assert reason is None, f"{scenario.name} unexpectedly does not apply: {reason}"
            await scenario.run(env)
        else:
            assert reason is not None and expected in reason, f"expected a skip for {expected!r}"
    finally:
        await env.destroy()
    if reason is not None:
        pytest.skip(reason)
