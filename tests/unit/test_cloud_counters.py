"""Counts from absolute PLC counters: resets, rollover, duplicates, late and out-of-order data."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from taktline_cloud.production.counters import (
    ROLLOVER_MAX_STEP,
    Checkpoint,
    checkpoint_holds,
    count_window,
    counted,
    step,
)

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
WRAP = Decimal(2**32)


def series(*values: int, start: datetime = T0) -> list[tuple[datetime, Decimal]]:
    """One reading per second from `start`."""
    return [(start + timedelta(seconds=i), Decimal(v)) for i, v in enumerate(values)]


def test_monotonic_series_counts_the_increase() -> None:
    assert counted(series(100, 101, 105, 110), T0) == 10


def test_reset_counts_from_zero() -> None:
    # 100 → 110 (10 parts), PLC reset, 0 → 4 (4 parts); the drop itself adds the new value.
    assert counted(series(100, 110, 0, 4), T0) == 14
    assert counted(series(100, 110, 3, 4), T0) == 14  # reset seen only after 3 more parts


def test_rollover_counts_across_the_wrap() -> None:
    points = series(2**32 - 3, 2**32 - 1, 2, 5)
    assert counted(points, T0) == 2 + 3 + 3  # ...4294967293 → ...95, wrap to 2 (3), 5 (3)


def test_a_big_drop_is_a_reset_not_a_wrap() -> None:
    assert step(Decimal(1000), Decimal(7)) == 7
    near_top = WRAP - 10
    assert step(near_top, Decimal(5)) == 15
    # A wrap would mean more than ROLLOVER_MAX_STEP parts between two readings: a reset.
    assert step(WRAP - ROLLOVER_MAX_STEP, Decimal(5)) == 5


def test_duplicates_and_any_order_give_the_same_count() -> None:
    points = series(100, 103, 0, 2, 7, 2**32 - 2, 1, 9)
    expected = counted(points, T0)
    assert expected == 3 + 0 + 2 + 5 + (2**32 - 2 - 7) + 3 + 8
    rng = random.Random(7)
    for _ in range(50):
        shuffled = points + rng.sample(points, 4)  # duplicates too
        rng.shuffle(shuffled)
        assert counted(shuffled, T0) == expected


def test_late_sample_converges_to_the_same_answer() -> None:
    full = series(10, 11, 12, 13, 14)
    without_middle = [p for i, p in enumerate(full) if i != 2]
    assert counted(without_middle, T0) == counted(full, T0) == 4


def test_baseline_is_the_last_reading_at_or_before_the_window_start() -> None:
    points = series(50, 60, 70, 80)  # at T0, +1s, +2s, +3s
    assert counted(points, T0 + timedelta(seconds=1)) == 20  # baseline 60
    assert counted(points, T0 + timedelta(milliseconds=1500)) == 20  # baseline 60 (at +1s)


def test_without_a_baseline_the_first_reading_in_the_window_is_it() -> None:
    points = series(50, 60, 70, start=T0 + timedelta(seconds=10))
    assert counted(points, T0) == 20


def test_window_end_is_inclusive_and_later_readings_are_ignored() -> None:
    points = series(0, 1, 2, 3, 4)
    assert counted(points, T0, T0 + timedelta(seconds=2)) == 2
    assert counted(points, T0, T0 + timedelta(milliseconds=2500)) == 2


def test_windows_partition_the_counts() -> None:
    points = series(5, 9, 0, 3, 8, 12)
    cut = T0 + timedelta(seconds=2)
    assert counted(points, T0, cut) + counted(points, cut) == counted(points, T0)


def test_empty_and_single_reading_count_nothing() -> None:
    assert counted([], T0) == 0
    assert counted(series(42), T0) == 0


def test_resuming_from_a_checkpoint_gives_the_full_count() -> None:
    points = series(5, 9, 0, 3, 8, 2**32 - 1, 4, 12)
    full, _ = count_window(points, T0)
    first, checkpoint = count_window(points[:4], T0)
    assert checkpoint == Checkpoint(T0 + timedelta(seconds=3), first)
    rest = [p for p in points if p[0] >= checkpoint.through]
    resumed, last = count_window(rest, T0, None, checkpoint)
    assert resumed == full == counted(points, T0)
    assert last is not None
    assert last.through == points[-1][0]


def test_no_checkpoint_before_the_window_start() -> None:
    _, checkpoint = count_window(series(5), T0 + timedelta(seconds=1))
    assert checkpoint is None


def test_a_checkpoint_stops_holding_for_earlier_readings_or_an_earlier_end() -> None:
    checkpoint = Checkpoint(T0 + timedelta(seconds=10), Decimal(7))
    assert checkpoint_holds(checkpoint, None, None)
    assert checkpoint_holds(checkpoint, None, T0 + timedelta(seconds=11))
    assert not checkpoint_holds(checkpoint, None, T0 + timedelta(seconds=10))
    assert not checkpoint_holds(checkpoint, None, T0)
    assert checkpoint_holds(checkpoint, T0 + timedelta(seconds=10), None)
    assert not checkpoint_holds(checkpoint, T0 + timedelta(seconds=9), None)


def test_readings_a_counter_cannot_show_are_ignored() -> None:
    points = series(10, 12, 14)
    points.append((T0 + timedelta(seconds=1.5), Decimal("NaN")))
    points.append((T0 + timedelta(seconds=3), Decimal(-1)))
    points.append((T0 + timedelta(seconds=4), Decimal("Infinity")))
    assert counted(points, T0) == 4
