"""Capped exponential backoff with full jitter, for every retry loop of the cloud."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays doubling from `initial` up to `cap`, each drawn uniformly from [delay/2, delay].

    Jitter keeps many clients from reconnecting in lock-step after a broker restart; the lower
    bound keeps a retry from coming back immediately.
    """

    initial: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    _attempt: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.cap:
            raise ValueError(f"need 0 < initial <= cap, got initial={self.initial} cap={self.cap}")

    def next_delay(self) -> float:
        """The delay before the next attempt (seconds); grows with each call until `reset`."""
        ceiling = min(self.cap, self.initial * 2 ** min(self._attempt, 32))
        self._attempt += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start again from `initial` (after a success)."""
        self._attempt = 0
