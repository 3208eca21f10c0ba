"""Testing helpers and the broker conformance suite.

``SCENARIOS`` is the one scenario suite every broker adapter must pass; a broker's
:class:`herald.Features` decide which scenarios apply. Run it for your own adapter::

    import pytest
    from herald.testing import SCENARIOS, Environment

    @pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
    async def test_my_broker(scenario, tmp_path):
        env = Environment(url="mybroker://...", workdir=tmp_path)
        if scenario.applies(await env.features()):
            await scenario.run(env)

:class:`Recorder` and :func:`eventually` help users test their own services on
``memory://``.
"""

from .conformance import SCENARIOS, Scenario
from .environment import Environment
from .recorder import Recorder, eventually

__all__ = ["SCENARIOS", "Environment", "Recorder", "Scenario", "eventually"]
