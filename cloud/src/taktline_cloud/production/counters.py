"""Parts counted from an absolute PLC counter series (reset- and rollover-safe, order-independent).

PLC counters are absolute uint32 values that only go up, except when the PLC resets them (they
restart from 0) or when they wrap past 2**32 - 1. Counting is done on the sorted series, so
duplicates, late and out-of-order samples converge to the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from taktline_contract.metrics import COUNTER_MODULUS

ROLLOVER_MAX_STEP = Decimal(2**20)
"""A drop counts as a wrap past 2**32 only when the wrapped increase is at most this.

Consecutive samples of one counter are a few parts apart (the edge reports every change, and
replays them after an outage), so a wrap shows as e.g. 4294967290 → 3; a drop to a value that
would mean millions of parts across the wrap is a reset.
"""

_MODULUS = Decimal(COUNTER_MODULUS)

CounterPoint = tuple[datetime, Decimal]


def step(previous: Decimal, current: Decimal) -> Decimal:
    """Parts made between two consecutive readings of one counter."""
    if current >= previous:
        return current - previous
    wrapped = current + _MODULUS - previous
    if wrapped <= ROLLOVER_MAX_STEP:
        return wrapped
    # A reset: the counter restarted from 0, so everything it shows now was made since.
    return current


def sorted_series(points: Iterable[CounterPoint]) -> list[CounterPoint]:
    """The series by time, one value per instant (the first seen wins, as in the historian).

    Readings a uint32 counter cannot show (NaN, infinite, negative) are left out.
    """
    first: dict[datetime, Decimal] = {}
    for at, value in points:
        if value.is_finite() and value >= 0:
            first.setdefault(at, value)
    return sorted(first.items())


def counted(
    points: Iterable[CounterPoint], start: datetime, end: datetime | None = None
) -> Decimal:
    """Parts counted in (start, end] (end None: no upper bound).

    The baseline is the last reading at or before `start`; without one, the first reading in the
    window is the baseline (what the counter showed when we first heard of it).
    """
    series = sorted_series(points)
    baseline: Decimal | None = None
    total = Decimal(0)
    for at, value in series:
        if end is not None and at > end:
            break
        if at <= start or baseline is None:
            baseline = value
            continue
        total += step(baseline, value)
        baseline = value
    return total


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Parts counted in (window start, through]; `through` is the time of a stored reading.

    Counting resumes from it instead of from the window start, so posting costs the new
    readings only, not the order's whole history.
    """

    through: datetime
    counted: Decimal


def checkpoint_holds(
    checkpoint: Checkpoint, end: datetime | None, earliest_new: datetime | None
) -> bool:
    """True when resuming from `checkpoint` gives the same answer as counting from scratch.

    It stops holding when a reading at or before it has arrived since (late or replayed data),
    or when the window now ends before it (an order completed before that reading).
    """
    if earliest_new is not None and earliest_new <= checkpoint.through:
        return False
    return end is None or checkpoint.through <= end


def count_window(
    points: Iterable[CounterPoint],
    start: datetime,
    end: datetime | None = None,
    checkpoint: Checkpoint | None = None,
) -> tuple[Decimal, Checkpoint | None]:
    """Parts counted in (start, end], resumed from `checkpoint` when given; and the next one.

    With a checkpoint, `points` must hold its reading (at `through`) and the ones after it.
    """
    origin, base = (checkpoint.through, checkpoint.counted) if checkpoint else (start, Decimal(0))
    series = [p for p in sorted_series(points) if end is None or p[0] <= end]
    total = base + counted(series, origin, end)
    # Only a reading after the window start can be a checkpoint: before it, a late reading
    # between the checkpoint and the start would be counted on resuming.
    if series and series[-1][0] > origin:
        return total, Checkpoint(series[-1][0], total)
    return total, checkpoint
