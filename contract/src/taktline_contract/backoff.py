"""Capped exponential backoff with jitter: the one retry delay policy of every Taktline process."""

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays that double from `initial` up to `maximum`, each shortened by random jitter.

    The n-th delay (0-based) lies in ``[base * (1 - jitter), base]`` where
    ``base = min(maximum, initial * factor**n)``: jitter spreads many gateways reconnecting to
    one broker after an outage, and never makes a delay longer than the cap.
    """

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("backoff needs 0 < initial <= maximum")
        if self.factor < 1:
            raise ValueError("backoff factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be within 0..1")

    def base(self) -> float:
        """The un-jittered delay of the next attempt."""
        # min() before the power would overflow: stop growing once the cap is reached.
        delay = self.initial
        for _ in range(self.attempts):
            delay *= self.factor
            if delay >= self.maximum:
                return self.maximum
        return min(delay, self.maximum)

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failed attempt."""
        base = self.base()
        self.attempts += 1
        return base * (1 - self.jitter * self.rng.random())

    def reset(self) -> None:
        """Start again from `initial` (call after a success)."""
        self.attempts = 0
