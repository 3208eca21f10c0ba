"""Demo controls: what the dashboard may start and stop when a supervisor hosts it.

``herald demo`` runs the HR platform under a supervisor, which hands the dashboard an
object with this protocol; a dashboard started on its own (``herald dashboard``) has
none, and shows no controls.

>>> class Toggles:
...     def __init__(self) -> None:
...         self.running = {"payroll": True}
...     def states(self) -> list[ServiceState]:
...         return [ServiceState(name, on) for name, on in self.running.items()]
...     async def start(self, name: str) -> None:
...         self.running[name] = True
...     async def stop(self, name: str) -> None:
...         self.running[name] = False
>>> import asyncio
>>> toggles = Toggles()
>>> asyncio.run(toggles.stop("payroll"))
>>> isinstance(toggles, ServiceControls), toggles.states()
(True, [ServiceState(name='payroll', running=False, pid=None, restarts=0)])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["ServiceControls", "ServiceState"]


@dataclass(frozen=True, slots=True)
class ServiceState:
    """One supervised service: whether its process runs now."""

    name: str
    running: bool
    pid: int | None = None
    restarts: int = 0


@runtime_checkable
class ServiceControls(Protocol):
    """Start and stop the services of a supervised platform."""

    def states(self) -> list[ServiceState]:
        """Every service the supervisor knows, started or not, in a stable order."""

    async def start(self, name: str) -> None:
        """Start ``name`` (no-op when it runs); ``KeyError`` for an unknown name."""

    async def stop(self, name: str) -> None:
        """Stop ``name`` gracefully and keep it stopped until :meth:`start`."""
