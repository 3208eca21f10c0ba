"""Where a conformance scenario runs: a broker URL, a scratch directory, a restart hook."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..broker import Features
from ..brokers import broker_from_url
from ..bus import Bus, connect

__all__ = ["Environment"]


@dataclass
class Environment:
    """One scenario's world. ``url`` should be isolated (its own namespace or file)."""

    url: str
    workdir: Path
    restart_broker: Callable[[], Awaitable[None]] | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _features: Features | None = None

    def connect(self) -> Bus:
        return connect(self.url, source="conformance")

    def service_name(self, base: str) -> str:
        """A service name unique to this run (queues of earlier runs never interfere)."""
        return f"{base}-{self.token}"

    async def features(self) -> Features:
        """The broker's features (connecting once: some are known only from the server)."""
        if self._features is None:
            broker = broker_from_url(self.url)
            await broker.connect()
            try:
                self._features = broker.features
            finally:
                await broker.close()
        return self._features

    async def destroy(self) -> None:
        broker = broker_from_url(self.url)
        await broker.connect()
        try:
            await broker.destroy()
        finally:
            await broker.close()
