"""Retry policy: how many attempts a handler gets and how long to wait between them."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter; after ``attempts`` failures, dead-letter.

    >>> p = RetryPolicy(attempts=4, initial_delay=1.0, multiplier=2.0, max_delay=3.0, jitter=0)
    >>> [p.delay(n) for n in (1, 2, 3)]
    [1.0, 2.0, 3.0]
    >>> p.delay(10**9), p.delay(-5)
    (3.0, 1.0)
    """

    attempts: int = 5
    """Total deliveries including the first; 1 means no retry."""
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.1
    """Up to this fraction of the delay is added at random, to spread retry storms."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("RetryPolicy delays must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("RetryPolicy.jitter must be between 0 and 1")

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt number ``failed_attempt`` (1-based) failed."""
        steps = max(0, failed_attempt - 1)
        try:
            grown = self.initial_delay * self.multiplier**steps
        except OverflowError:
            grown = self.max_delay
        base = min(self.max_delay, grown)
        return base * (1 + self.jitter * random.random()) if self.jitter else base
