"""Where a conformance scenario runs: a broker URL, a scratch directory, a restart hook."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..broker import Broker, Features
from ..brokers import broker_from_url
from ..bus import Bus, connect

__all__ = ["Environment"]


@dataclass
class Environment:
    """One scenario's world. ``url`` should be isolated (its own namespace or file).

    ``restart_broker`` stops and starts the broker's server (None where the test
    environment cannot); scenarios that need it are skipped without it.
    """

    url: str
    workdir: Path
    restart_broker: Callable[[], Awaitable[None]] | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _features: Features | None = None

    def connect(self, *, scheduler: bool = False) -> Bus:
        """A bus on the broker. Herald's scheduler runs only when asked: most
        scenarios schedule nothing, and it costs a queue and a consumer."""
        return connect(self.url, source="conformance", scheduler=scheduler)

    @contextlib.asynccontextmanager
    async def broker(self) -> AsyncIterator[Broker]:
        """A connected broker, for scenarios that drive the broker contract directly."""
        broker = broker_from_url(self.url)
        await broker.connect()
        try:
            yield broker
        finally:
            await broker.close()

    def service_name(self, base: str) -> str:
        """A service name unique to this run (queues of earlier runs never interfere)."""
        return f"{base}-{self.token}"

    async def features(self) -> Features:
        """The broker's features (connecting once: some are known only from the server)."""
        if self._features is None:
            async with self.broker() as broker:
                self._features = broker.features
        return self._features

    async def destroy(self) -> None:
        async with self.broker() as broker:
            await broker.destroy()
