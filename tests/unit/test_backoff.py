"""The one backoff policy: capped exponential with jitter."""

from __future__ import annotations

import random

import pytest

from taktline_contract.backoff import Backoff


def test_delays_double_up_to_the_cap_and_jitter_only_shortens() -> None:
    backoff = Backoff(initial=0.5, maximum=8.0, factor=2.0, jitter=0.5, rng=random.Random(1))
    bases = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for base in bases:
        delay = backoff.next_delay()
        assert base * 0.5 <= delay <= base
    assert backoff.base() == 8.0


def test_jitter_spreads_delays() -> None:
    rng = random.Random(7)
    delays = {round(Backoff(initial=1.0, maximum=1.0, rng=rng).next_delay(), 6) for _ in range(50)}
    assert len(delays) > 40
    assert min(delays) >= 0.5
    assert max(delays) <= 1.0


def test_no_jitter_is_exact_and_reset_starts_over() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)


def test_a_long_outage_does_not_overflow() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, jitter=0.0)
    backoff.attempts = 10_000
    assert backoff.next_delay() == 30.0


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": 0.0}, {"initial": 5.0, "maximum": 1.0}, {"factor": 0.5}, {"jitter": 1.5}],
)
def test_invalid_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(**kwargs)  # type: ignore[arg-type]
