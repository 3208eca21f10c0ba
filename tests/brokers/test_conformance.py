"""Every broker through the one conformance suite (herald.testing.SCENARIOS)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from herald.brokers import broker_from_url
from herald.testing import SCENARIOS, Environment, Scenario

from ..servers import SPECS, BrokerSpec


def _applies(spec: BrokerSpec, scenario: Scenario) -> bool:
    """Scenarios a broker's declared features rule out are not generated at all."""
    try:
        features = broker_from_url(spec.make_url("collect", Path("/tmp"))).features
    except Exception:  # an adapter that cannot even be built must fail in its tests
        return True
    return scenario.applies(features)


CASES = [
    pytest.param(spec, sc, id=f"{spec.scheme}-{sc.name}")
    for spec in SPECS
    for sc in SCENARIOS
    if _applies(spec, sc)
]


@pytest.mark.parametrize(("spec", "scenario"), CASES)
async def test_scenario(spec: BrokerSpec, scenario: Scenario, tmp_path: Path) -> None:
    spec.require()
    token = uuid.uuid4().hex[:10]
    env = Environment(spec.make_url(token, tmp_path), tmp_path, spec.restart, token=token)
    assert scenario.applies(await env.features()), "features differ once connected"
    try:
        await scenario.run(env)
    finally:
        await env.destroy()
