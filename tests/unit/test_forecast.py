"""Demand forecast: bucketing, method rules, backtest against naive, consumption by orders."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from taktline_cloud.errors import Invalid
from taktline_cloud.planning.forecast import (
    Bucket,
    DemandSeries,
    Method,
    backtest,
    choose_method,
    consume,
    demand_series,
    forecast,
)

MONDAY = date(2026, 11, 2)


def daily(*values: str | int, start: date = MONDAY) -> DemandSeries:
    return DemandSeries(Bucket.DAY, start, tuple(Decimal(v) for v in values))


def weekly(*values: str | int, start: date = MONDAY) -> DemandSeries:
    return DemandSeries(Bucket.WEEK, start, tuple(Decimal(v) for v in values))


def seasonal_sales(days: int, seed: int = 42) -> list[tuple[date, Decimal]]:
    """Daily sales with an upward trend, a weekly pattern (weekend dip) and Gaussian noise."""
    rng = random.Random(seed)
    weekday = [0, 10, 14, 12, 8, -15, -25]
    sales = []
    for i in range(days):
        level = 40 + 0.5 * i + weekday[i % 7] + rng.gauss(0, 3)
        sales.append((MONDAY + timedelta(days=i), Decimal(f"{max(level, 0):.1f}")))
    return sales


# --- buckets ---------------------------------------------------------------------------------


def test_sales_are_summed_per_day_and_missing_days_are_zero() -> None:
    sales = [
        (date(2026, 11, 2), Decimal(5)),
        (date(2026, 11, 2), Decimal("2.5")),  # a second order the same day adds up
        (date(2026, 11, 4), Decimal(3)),
    ]
    series = demand_series(sales, Bucket.DAY, through=date(2026, 11, 6))
    assert series.start == date(2026, 11, 2)
    assert series.values == tuple(Decimal(v) for v in ["7.5", "0", "3", "0", "0"])
    assert series.end == date(2026, 11, 7)


def test_iso_weeks_start_on_monday_across_the_year_end() -> None:
    sales = [
        (date(2026, 12, 31), Decimal(4)),  # Thursday of the week starting Mon 28 Dec
        (date(2027, 1, 3), Decimal(6)),  # Sunday, same ISO week
        (date(2027, 1, 4), Decimal(1)),  # Monday, next week
    ]
    series = demand_series(sales, Bucket.WEEK, start=date(2026, 12, 23))
    assert series.starts == (date(2026, 12, 21), date(2026, 12, 28), date(2027, 1, 4))
    assert series.values == (Decimal(0), Decimal(10), Decimal(1))


def test_aware_datetimes_are_bucketed_by_their_utc_date() -> None:
    evening_in_chicago = datetime(2026, 11, 2, 20, 0, tzinfo=timezone(timedelta(hours=-6)))
    series = demand_series(
        [(evening_in_chicago, Decimal(3)), (datetime(2026, 11, 2, 1, 0, tzinfo=UTC), Decimal(1))],
        Bucket.DAY,
    )
    assert series.values == (Decimal(1), Decimal(3))  # 02:00 UTC on the 3rd


def test_an_item_without_sales_needs_an_explicit_range() -> None:
    series = demand_series([], Bucket.WEEK, start=MONDAY, through=MONDAY + timedelta(days=20))
    assert series.values == (Decimal(0),) * 3
    with pytest.raises(Invalid, match="no sales history"):
        demand_series([], Bucket.WEEK)


@pytest.mark.parametrize(
    ("sales", "message"),
    [
        ([(MONDAY, Decimal(-1))], "must not be negative"),
        ([(MONDAY, Decimal("NaN"))], "finite Decimal"),
        ([(datetime(2026, 11, 2, 8, 0), Decimal(1))], "no timezone"),  # noqa: DTZ001
        ([(MONDAY + timedelta(days=9), Decimal(1))], "outside"),
    ],
)
def test_bad_sales_are_refused(sales: list[tuple[date, Decimal]], message: str) -> None:
    with pytest.raises(Invalid, match=message):
        demand_series(sales, Bucket.DAY, start=MONDAY, through=MONDAY + timedelta(days=7))


def test_a_weekly_series_must_start_on_monday() -> None:
    with pytest.raises(Invalid, match="bucket start"):
        weekly(1, 2, start=MONDAY + timedelta(days=1))


# --- forecast rules --------------------------------------------------------------------------


def test_trend_and_weekly_season_beat_the_seasonal_naive_forecast() -> None:
    history = demand_series(seasonal_sales(70), Bucket.DAY)
    result = forecast(history, 14)
    assert result.method is Method.HOLT_WINTERS
    assert result.series.start == history.end
    values = result.series.values
    assert len(values) == 14
    # The weekly pattern carries on: Wednesday (peak) above Sunday (trough), each week.
    assert values[2] > values[6] + 20
    assert values[9] > values[13] + 20
    # And the trend too: next week's Wednesday above this week's.
    assert values[9] > values[2]

    check = backtest(history)
    assert check.method is Method.HOLT_WINTERS
    assert check.baseline == "seasonal naive"
    assert check.origins == 14
    assert check.model_mae < check.baseline_mae
    assert check.mase is not None
    assert check.mase < 1
    assert check.relative_mae is not None
    assert check.relative_mae < 1


def test_a_flat_series_forecasts_its_level() -> None:
    history = daily(*[25] * 30)
    result = forecast(history, 5)
    assert result.method is Method.FLAT
    assert result.series.values == (Decimal("25.00"),) * 5

    check = backtest(history)
    assert check.model_mae == check.baseline_mae == Decimal(0)
    assert check.mase is None  # no error to scale by
    assert check.relative_mae is None


def test_short_history_falls_back_to_the_mean() -> None:
    result = forecast(daily(10, 20, 30), 4)
    assert result.method is Method.MEAN
    assert result.series.values == (Decimal("20.00"),) * 4


def test_a_few_buckets_use_simple_smoothing_without_trend_or_season() -> None:
    result = forecast(daily(12, 9, 11, 10, 13, 8), 7)
    assert result.method is Method.SES
    assert len(set(result.series.values)) == 1  # SES forecasts one level
    assert Decimal(8) <= result.series.values[0] <= Decimal(13)


@pytest.mark.parametrize(
    ("length", "season", "method"),
    [
        (1, 7, Method.MEAN),
        (3, 7, Method.MEAN),
        (4, 7, Method.SES),
        (9, 7, Method.SES),
        (10, 7, Method.HOLT),
        (23, 7, Method.HOLT),  # two weeks and ten days are needed for a season
        (24, 7, Method.HOLT_WINTERS),
        (100, 52, Method.HOLT),  # weeks: two years and ten weeks
        (114, 52, Method.HOLT_WINTERS),
        (200, 1, Method.HOLT),  # season length 1: no season
    ],
)
def test_method_rules(length: int, season: int, method: Method) -> None:
    assert choose_method(length, season) is method
    assert choose_method(length, season, flat=True) is Method.FLAT


def test_a_falling_trend_is_clipped_at_zero() -> None:
    result = forecast(daily(100, 90, 80, 70, 60, 50, 40, 30, 20, 10, 5, 1), 10)
    assert result.method is Method.HOLT
    assert all(value == 0 for value in result.series.values)
    assert all(str(value) == "0.00" for value in result.series.values)  # not "-0.00"


def test_quantum_sets_the_precision() -> None:
    result = forecast(daily(10, 20, 31), 1, quantum=Decimal(1))
    assert result.series.values == (Decimal(20),)


def test_short_history_backtests_against_the_naive_forecast() -> None:
    check = backtest(daily(12, 9, 11, 10, 13, 8, 10, 12), window=3)
    assert check.baseline == "naive"
    assert check.origins == 3
    assert check.lead == 1
    # Naive over the last 3 buckets: (|8-13| + |10-8| + |12-10|) / 3.
    assert check.baseline_mae == Decimal("3.00")
    assert check.model_mae > 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: forecast(daily(1, 2, 3), 0), "horizon"),
        (lambda: forecast(daily(1, 2, 3), -2), "horizon"),
        (lambda: forecast(daily(), 3), "no sales history"),
        (lambda: forecast(daily(1, 2, 3), 2, season_length=0), "season length"),
        (lambda: forecast(daily(1, 2, 3), 2, quantum=Decimal(0)), "quantum"),
        (lambda: backtest(daily(5)), "needs more history"),
        (lambda: backtest(daily(1, 2, 3), window=0), "at least 1"),
        (lambda: consume(daily(1, 2), [], backward=-1), "must not be negative"),
        (lambda: consume(daily(1, 2), [(MONDAY, Decimal(-3))]), "must not be negative"),
    ],
)
def test_bad_requests_are_refused(call: Callable[[], object], message: str) -> None:
    with pytest.raises(Invalid, match=message):
        call()


# --- consumption -----------------------------------------------------------------------------


def day(offset: int) -> date:
    return MONDAY + timedelta(days=offset)


def test_without_a_window_demand_is_the_larger_of_forecast_and_orders() -> None:
    plan = daily(10, 10, 10, 10)
    orders = [(day(0), Decimal(4)), (day(1), Decimal(15)), (day(3), Decimal(10))]
    rows = consume(plan, orders)
    assert [r.start for r in rows] == [day(0), day(1), day(2), day(3)]
    assert [r.orders for r in rows] == [4, 15, 0, 10]
    assert [r.consumed for r in rows] == [4, 10, 0, 10]
    assert [r.remaining_forecast for r in rows] == [6, 0, 10, 0]
    assert [r.demand for r in rows] == [10, 15, 10, 10]


def test_backward_consumption_takes_the_nearest_earlier_bucket_first() -> None:
    # 25 ordered on day 2: 10 of day 2's forecast, then 10 of day 1's, then 5 of day 0's.
    rows = consume(daily(10, 10, 10, 10), [(day(2), Decimal(25))], backward=2)
    assert [r.consumed for r in rows] == [5, 10, 10, 0]
    assert [r.demand for r in rows] == [5, 0, 25, 10]
    assert sum(r.demand for r in rows) == 40  # the forecast total covers the order


def test_forward_consumption_after_backward_within_the_windows() -> None:
    # 35 on day 1: own 10, backward day 0's 10, forward day 2's 10; 5 left over.
    rows = consume(daily(10, 10, 10, 10), [(day(1), Decimal(35))], backward=1, forward=1)
    assert [r.consumed for r in rows] == [10, 10, 10, 0]
    assert [r.demand for r in rows] == [0, 35, 0, 10]  # 5 beyond the forecast stays demand


def test_orders_consume_in_date_order() -> None:
    # Day 0's 5 orders take day 0 first; day 1's 18 then take day 1 and the rest of day 0.
    rows = consume(daily(10, 10), [(day(1), Decimal(18)), (day(0), Decimal(5))], backward=1)
    assert [r.consumed for r in rows] == [10, 10]
    assert [r.demand for r in rows] == [5, 18]


def test_orders_outside_the_plan_consume_within_their_window() -> None:
    plan = weekly(50, 50, start=MONDAY)
    orders = [
        (datetime(2026, 10, 30, 9, 0, tzinfo=UTC), Decimal(20)),  # the week before the plan
        (MONDAY + timedelta(days=15), Decimal(30)),  # the week after the plan
    ]
    rows = consume(plan, orders, backward=1, forward=1)
    assert [r.orders for r in rows] == [0, 0]  # reported where they fall, i.e. not here
    assert [r.consumed for r in rows] == [20, 30]
    assert [r.demand for r in rows] == [30, 20]


def test_orders_in_weeks_are_summed_by_iso_week() -> None:
    orders = [
        (datetime(2026, 11, 3, 10, 0, tzinfo=UTC), Decimal(30)),
        (date(2026, 11, 8), Decimal(30)),  # Sunday, same week
        (date(2026, 11, 9), Decimal(5)),
    ]
    rows = consume(weekly(50, 50), orders)
    assert [r.orders for r in rows] == [60, 5]
    assert [r.demand for r in rows] == [60, 50]


# --- properties ------------------------------------------------------------------------------

_quantities = st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(
    history=st.integers(min_value=1, max_value=40).flatmap(
        lambda n: st.lists(_quantities, min_size=n, max_size=n)
    ),
    horizon=st.integers(min_value=1, max_value=20),
    bucket=st.sampled_from(Bucket),
)
def test_forecasts_are_never_negative_and_as_long_as_asked(
    history: list[Decimal], horizon: int, bucket: Bucket
) -> None:
    series = DemandSeries(bucket, MONDAY, tuple(history))
    result = forecast(series, horizon)
    event(result.method)
    assert len(result.series.values) == horizon
    assert result.series.start == series.end
    assert all(value >= 0 for value in result.series.values)
    assert all(value.as_tuple().exponent == -2 for value in result.series.values)


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(_quantities, min_size=1, max_size=10),
    orders=st.lists(st.tuples(st.integers(min_value=-3, max_value=12), _quantities), max_size=10),
    backward=st.integers(min_value=0, max_value=3),
    forward=st.integers(min_value=0, max_value=3),
)
def test_consumption_never_takes_more_than_the_forecast_or_the_orders(
    plan: list[Decimal], orders: list[tuple[int, Decimal]], backward: int, forward: int
) -> None:
    rows = consume(
        DemandSeries(Bucket.DAY, MONDAY, tuple(plan)),
        [(day(offset), quantity) for offset, quantity in orders],
        backward=backward,
        forward=forward,
    )
    assert all(0 <= row.consumed <= row.forecast for row in rows)
    assert sum(r.consumed for r in rows) <= sum(q for _, q in orders)
    if all(0 <= offset < len(plan) for offset, _ in orders):
        total = sum(r.demand for r in rows)
        assert total >= sum(plan)
        assert total >= sum(q for _, q in orders)
    if backward == forward == 0:
        assert all(r.demand == max(r.forecast, r.orders) for r in rows)
