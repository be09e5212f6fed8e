"""A line's rate: standard until there is enough to measure, then measured; 0 projects nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from taktline_cloud.production.rate import RateBasis, line_rate, time_to_make

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
STANDARD = Decimal(2160)
WINDOW = timedelta(minutes=5)
MINIMUM = timedelta(seconds=20)


def one_per_second(seconds: int, start: datetime = T0) -> list[tuple[datetime, Decimal]]:
    return [(start + timedelta(seconds=i), Decimal(i)) for i in range(seconds + 1)]



def test_standard_rate_until_the_span_is_long_enough() -> None:
    result = line_rate(
        one_per_second(10),
        started_at=T0,
        now=T0 + timedelta(seconds=10),
        standard_per_hour=STANDARD,
        rate_window=WINDOW,
        min_rate_window=MINIMUM,
    )
    assert (result.per_hour, result.basis) == (STANDARD, RateBasis.STANDARD)


def test_measured_over_the_recent_window_only() -> None:
    # 1 part/s for 10 min, then 1 part per 2 s for 5 min: the 5-min window sees the slow part.
    fast = one_per_second(600)
    slow = [(T0 + timedelta(seconds=600 + 2 * i), Decimal(600 + i)) for i in range(151)]
    result = line_rate(
        fast + slow,
        started_at=T0,
        now=T0 + timedelta(seconds=900),
        standard_per_hour=STANDARD,
        rate_window=WINDOW,
        min_rate_window=MINIMUM,
    )
    assert (result.per_hour, result.basis) == (Decimal(1800), RateBasis.MEASURED)


def test_window_starts_no_earlier_than_the_work_order() -> None:
    started = T0 + timedelta(seconds=60)
    result = line_rate(
        one_per_second(120),
        started_at=started,
        now=T0 + timedelta(seconds=120),
        standard_per_hour=STANDARD,
        rate_window=WINDOW,
        min_rate_window=MINIMUM,
    )
    assert result.per_hour == Decimal(3600)


def test_a_stopped_line_measures_zero() -> None:
    result = line_rate(
        one_per_second(60),
        started_at=T0,
        now=T0 + timedelta(minutes=20),
        standard_per_hour=STANDARD,
        rate_window=WINDOW,
        min_rate_window=MINIMUM,
    )
    assert (result.per_hour, result.basis) == (Decimal(0), RateBasis.MEASURED)


def test_time_to_make() -> None:
    assert time_to_make(Decimal(60), Decimal(3600)) == timedelta(minutes=1)
    assert time_to_make(Decimal(0), Decimal(3600)) == timedelta(0)
    assert time_to_make(Decimal(1), Decimal(3)) == timedelta(minutes=20)
