"""``memory://[name]`` — an in-process broker for tests and single-process apps."""

from .broker import MemoryBroker

__all__ = ["MemoryBroker"]
