"""Testing helpers and the broker conformance suite.

``SCENARIOS`` is the one scenario suite every broker adapter must pass; a scenario
that cannot apply to a broker says why. Run it for your own adapter::

    import pytest
    from herald.brokers import broker_from_url
    from herald.testing import SCENARIOS, Environment

    @pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
    async def test_my_broker(scenario, tmp_path):
        env = Environment(url="mybroker://...", workdir=tmp_path)
        broker = broker_from_url(env.url)
        reason = scenario.skip_reason(await env.features(), broker, env)
        if reason:
            pytest.skip(reason)
        await scenario.run(env)

:class:`Recorder` and :func:`eventually` help users test their own services on
``memory://``.
"""

from .conformance import SCENARIOS, Scenario
from .environment import Environment
from .recorder import Recorder, eventually, until

__all__ = ["SCENARIOS", "Environment", "Recorder", "Scenario", "eventually", "until"]
