"""A line's output rate: measured over a recent window, or the work centre's standard rate."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from taktline_cloud.production.counters import CounterPoint, counted

_HOUR_US = Decimal(3_600_000_000)
_RATE_STEP = Decimal("0.1")


class RateBasis(StrEnum):
    """Where a rate comes from."""

    MEASURED = "measured"
    STANDARD = "standard"


@dataclass(frozen=True, slots=True)
class Rate:
    """Parts per hour and where the figure comes from."""

    per_hour: Decimal
    basis: RateBasis


def _microseconds(span: timedelta) -> int:
    return span // timedelta(microseconds=1)


def line_rate(
    output: Iterable[CounterPoint],
    *,
    started_at: datetime,
    now: datetime,
    standard_per_hour: Decimal,
    rate_window: timedelta,
    min_rate_window: timedelta,
) -> Rate:
    """The rate of the line output series over [max(now - window, started_at), now].

    Too short a span to measure (a work order just started) gives the standard rate; a line that
    made nothing in the window has a measured rate of 0, and projects nothing.
    """
    window_start = max(now - rate_window, started_at)
    span = now - window_start
    if span < min_rate_window:
        return Rate(standard_per_hour, RateBasis.STANDARD)
    made = counted(output, window_start, now)
    if made <= 0:
        return Rate(Decimal(0), RateBasis.MEASURED)
    per_hour = made * _HOUR_US / Decimal(_microseconds(span))
    return Rate(per_hour.quantize(_RATE_STEP), RateBasis.MEASURED)


def time_to_make(quantity: Decimal, per_hour: Decimal) -> timedelta:
    """How long `quantity` parts take at `per_hour` (rounded up to the microsecond)."""
    if quantity <= 0:
        return timedelta(0)
    microseconds = quantity * _HOUR_US / per_hour
    return timedelta(microseconds=math.ceil(microseconds))
