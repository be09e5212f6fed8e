"""Demand forecast (pure): sales history → buckets → statistical forecast, its backtest, and
forecast consumption by booked orders, the demand the master schedule hands to MRP.

Buckets. Sales are summed per bucket, a day or an ISO week (starting Monday); a bucket without
sales is a zero, never a gap. Several sales on one date are summed: they are distinct orders, not
duplicates. Aware datetimes are bucketed by their UTC date; pass `date`s to bucket by the plant's
local calendar. Naive datetimes, negative or non-finite quantities are refused (`Invalid`).

Method rules (n buckets of history, m the season length: 7 for days, 52 for weeks):

    all buckets equal           FLAT          the level itself (a model would only add noise)
    n < 4                       MEAN          the mean: too little to smooth
    m > 1 and n >= 2m + 10      HOLT_WINTERS  additive damped trend + additive season; two full
                                              seasons to see the pattern repeat, ten more so the
                                              smoothing parameters are not fitted on them alone
    n >= 10                     HOLT          additive damped trend (damping keeps a short
                                              trend from running away over the horizon)
    otherwise                   SES           simple exponential smoothing

A fit that fails or gives non-finite numbers falls back to the next simpler rule. Additive, not
multiplicative, season and trend: sales of an item are often zero in some buckets. Forecasts are
clipped at zero and quantized (0.01 by default).

Backtest. Rolling origin over the last K buckets: at each origin the forecaster (the same rules,
on the history before the origin) forecasts `lead` buckets ahead, and so does the baseline, the
seasonal naive forecast (same bucket one season earlier) when the full-history method is
seasonal, else the naive one (last bucket). The result holds both mean absolute errors, their
ratio and the MASE (model MAE over the in-sample one-step baseline MAE of the history before the
window, Hyndman & Koehler 2006): below 1 the forecast beats the baseline.

Consumption. Booked orders consume the forecast: each bucket's orders, in date order, consume the
remaining forecast of their own bucket, then up to `backward` earlier buckets (nearest first),
then up to `forward` later ones. With no window (the default) each bucket's demand is
max(forecast, orders). MRP should plan the orders themselves (they carry pegging) plus the
remaining, unconsumed forecast of each bucket.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from taktline_cloud.errors import Invalid

with warnings.catch_warnings():
    # statsmodels 0.14 decorates its functions with pandas helpers that pandas 3 deprecates:
    # warnings about a third party's internals, raised once at import, that no caller can act on.
    warnings.simplefilter("ignore", DeprecationWarning)
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

Floats: TypeAlias = npt.NDArray[np.float64]
Sale: TypeAlias = tuple[date | datetime, Decimal]  # when sold or due, and how many

DEFAULT_QUANTUM = Decimal("0.01")
DEFAULT_WINDOW = 14  # two weeks of days, a quarter of weeks
_RATIO = Decimal("0.001")
_ZERO = Decimal(0)
_MIN_SMOOTHING = 4
_MIN_TREND = 10


class Bucket(StrEnum):
    """The length of a planning bucket."""

    DAY = "day"
    WEEK = "week"

    def start_of(self, day: date) -> date:
        """The first day of the bucket holding `day` (Monday for ISO weeks)."""
        return day if self is Bucket.DAY else day - timedelta(days=day.weekday())

    @property
    def length(self) -> timedelta:
        """How long one bucket lasts."""
        return timedelta(days=1 if self is Bucket.DAY else 7)

    @property
    def season_length(self) -> int:
        """The default season in buckets: a week of days, a year of weeks."""
        return 7 if self is Bucket.DAY else 52


class Method(StrEnum):
    """How a forecast was made (see the module docstring for the rules)."""

    FLAT = "flat"
    MEAN = "mean"
    SES = "ses"
    HOLT = "holt"
    HOLT_WINTERS = "holt_winters"


@dataclass(frozen=True, slots=True)
class DemandSeries:
    """A quantity per consecutive bucket from `start` (sales history, a forecast, a plan)."""

    bucket: Bucket
    start: date
    values: tuple[Decimal, ...]

    def __post_init__(self) -> None:
        if self.bucket.start_of(self.start) != self.start:
            raise Invalid(f"a {self.bucket} series must start on a bucket start, not {self.start}")
        for value in self.values:
            _check_quantity(value)

    @property
    def starts(self) -> tuple[date, ...]:
        """The first day of every bucket, in order."""
        return tuple(self.start + self.bucket.length * i for i in range(len(self.values)))

    @property
    def end(self) -> date:
        """The first day after the last bucket."""
        return self.start + self.bucket.length * len(self.values)


@dataclass(frozen=True, slots=True)
class Forecast:
    """The forecast for the buckets after the history, and how it was made."""

    series: DemandSeries
    method: Method
    season_length: int


@dataclass(frozen=True, slots=True)
class Backtest:
    """Rolling-origin errors of the forecaster and of the naive baseline over the same buckets."""

    method: Method
    baseline: str  # "seasonal naive" or "naive"
    origins: int
    lead: int
    model_mae: Decimal
    baseline_mae: Decimal
    relative_mae: Decimal | None  # model MAE / baseline MAE; None when the baseline is perfect
    mase: Decimal | None  # None when the in-sample baseline error is zero or cannot be measured


@dataclass(frozen=True, slots=True)
class BucketDemand:
    """One bucket after consumption: what was forecast, booked and consumed."""

    start: date
    forecast: Decimal
    orders: Decimal  # booked in this bucket
    consumed: Decimal  # of this bucket's forecast, by orders of this or nearby buckets

    @property
    def remaining_forecast(self) -> Decimal:
        """Forecast not covered by orders: the demand MRP adds on top of the orders."""
        return self.forecast - self.consumed

    @property
    def demand(self) -> Decimal:
        """What MRP sees in this bucket: the orders plus the unconsumed forecast."""
        return self.orders + self.remaining_forecast


def _check_quantity(quantity: Decimal) -> None:
    if not isinstance(quantity, Decimal) or not quantity.is_finite():
        raise Invalid(f"quantity must be a finite Decimal, not {quantity!r}")
    if quantity < 0:
        raise Invalid(f"quantity must not be negative: {quantity}")


def _day(moment: date | datetime) -> date:
    if isinstance(moment, datetime):
        if moment.utcoffset() is None:
            raise Invalid(f"timestamp {moment.isoformat()} has no timezone")
        return moment.astimezone(UTC).date()
    if isinstance(moment, date):
        return moment
    raise Invalid(f"expected a date or datetime, not {moment!r}")


def _per_bucket(entries: Iterable[Sale], bucket: Bucket) -> dict[date, Decimal]:
    totals: dict[date, Decimal] = defaultdict(Decimal)
    for moment, quantity in entries:
        _check_quantity(quantity)
        totals[bucket.start_of(_day(moment))] += quantity
    return totals


def demand_series(
    sales: Iterable[Sale],
    bucket: Bucket,
    *,
    start: date | None = None,
    through: date | None = None,
) -> DemandSeries:
    """Sales summed per bucket from `start` through `through` (default: first and last sale).

    Pass `through` (the last complete bucket) so that recent buckets without sales count as
    zeros; a sale outside [start, through] is refused.
    """
    totals = _per_bucket(sales, bucket)
    first = bucket.start_of(start) if start is not None else min(totals, default=None)
    last = bucket.start_of(through) if through is not None else max(totals, default=None)
    if first is None or last is None:
        raise Invalid("no sales history: give start and through for an item without sales")
    if last < first:
        raise Invalid(f"history ends ({last}) before it starts ({first})")
    outside = sorted(day for day in totals if not first <= day <= last)
    if outside:
        raise Invalid(f"sale in the {bucket} of {outside[0]} is outside {first}..{last}")
    count = (last - first) // bucket.length + 1
    values = tuple(totals.get(first + bucket.length * i, _ZERO) for i in range(count))
    return DemandSeries(bucket, first, values)


def _floats(series: DemandSeries) -> Floats:
    return np.array([float(value) for value in series.values], dtype=np.float64)


def choose_method(length: int, season_length: int, *, flat: bool = False) -> Method:
    """The rule for a history of `length` buckets (see the module docstring)."""
    if flat:
        return Method.FLAT
    if length < _MIN_SMOOTHING:
        return Method.MEAN
    if season_length > 1 and length >= 2 * season_length + _MIN_TREND:
        return Method.HOLT_WINTERS
    if length >= _MIN_TREND:
        return Method.HOLT
    return Method.SES


_SIMPLER = {
    Method.HOLT_WINTERS: Method.HOLT,
    Method.HOLT: Method.SES,
    Method.SES: Method.MEAN,
}


def _fit(history: Floats, horizon: int, method: Method, season_length: int) -> Floats:
    if method in (Method.FLAT, Method.MEAN):
        return np.full(horizon, float(history.mean()))
    seasonal = method is Method.HOLT_WINTERS
    model = ExponentialSmoothing(
        history,
        trend="add" if method is not Method.SES else None,
        damped_trend=method is not Method.SES,
        seasonal="add" if seasonal else None,
        seasonal_periods=season_length if seasonal else None,
        initialization_method="estimated",
    )
    # The optimiser warns when it stops short on a noisy or short series; the backtest is what
    # judges the result. (catch_warnings is process-global: run forecasts in one thread.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result: Floats = np.asarray(model.fit().forecast(horizon), dtype=np.float64)
    return result


def _predict(history: Floats, horizon: int, season_length: int) -> tuple[Method, Floats]:
    flat = bool(history.size) and bool(np.all(history == history[0]))
    method: Method | None = choose_method(history.size, season_length, flat=flat)
    while method is not None:
        try:
            values = _fit(history, horizon, method, season_length)
        except (ValueError, ArithmeticError):  # LinAlgError is a ValueError
            values = None
        if values is not None and values.shape == (horizon,) and np.all(np.isfinite(values)):
            return method, np.maximum(values, 0.0)
        method = _SIMPLER.get(method)
    return Method.MEAN, np.full(horizon, max(float(history.mean()), 0.0))


def _decimal(value: float, quantum: Decimal) -> Decimal:
    quantized = Decimal(value).quantize(quantum, rounding=ROUND_HALF_EVEN)
    return max(quantized, _ZERO) + 0  # + 0 turns -0.00 into 0.00


def _check_quantum(quantum: Decimal) -> None:
    if not quantum.is_finite() or quantum <= 0:
        raise Invalid(f"quantum must be a positive Decimal, not {quantum}")


def _season(series: DemandSeries, season_length: int | None) -> int:
    season = series.bucket.season_length if season_length is None else season_length
    if season < 1:
        raise Invalid(f"season length must be at least 1 bucket, not {season}")
    return season


def forecast(
    history: DemandSeries,
    horizon: int,
    *,
    season_length: int | None = None,
    quantum: Decimal = DEFAULT_QUANTUM,
) -> Forecast:
    """The forecast for the `horizon` buckets after `history` (season 1: no season)."""
    if horizon <= 0:
        raise Invalid(f"forecast horizon must be at least 1 bucket, not {horizon}")
    if not history.values:
        raise Invalid("no sales history to forecast from")
    _check_quantum(quantum)
    season = _season(history, season_length)
    method, values = _predict(_floats(history), horizon, season)
    series = DemandSeries(history.bucket, history.end, tuple(_decimal(v, quantum) for v in values))
    return Forecast(series, method, season)


def _mae(errors: Sequence[float]) -> float:
    return math.fsum(errors) / len(errors)


def backtest(
    history: DemandSeries,
    *,
    window: int = DEFAULT_WINDOW,
    lead: int = 1,
    season_length: int | None = None,
    quantum: Decimal = DEFAULT_QUANTUM,
) -> Backtest:
    """Rolling-origin errors over the last `window` buckets (at most half the history).

    Each origin forecasts `lead` buckets ahead (fewer near the end of the history).
    """
    if window <= 0 or lead <= 0:
        raise Invalid(f"backtest window and lead must be at least 1, not {window} and {lead}")
    _check_quantum(quantum)
    season = _season(history, season_length)
    y = _floats(history)
    n = y.size
    flat = bool(n) and bool(np.all(y == y[0]))
    method = choose_method(n, season, flat=flat)
    # The baseline a seasonal model must beat is the seasonal naive; otherwise the last value.
    lag = season if method is Method.HOLT_WINTERS else 1
    window = min(window, n // 2, n - lag)
    if window < 1:
        raise Invalid(f"a backtest needs more history than {n} {history.bucket} buckets")
    first = n - window
    model_errors: list[float] = []
    baseline_errors: list[float] = []
    for origin in range(first, n):
        steps = min(lead, n - origin)
        _, predicted = _predict(y[:origin], steps, season)
        for step in range(steps):
            actual = y[origin + step]
            # Seasonal naive repeats the last season; naive (lag 1) repeats the last value.
            naive = y[origin - lag + step % lag]
            model_errors.append(abs(float(predicted[step]) - actual))
            baseline_errors.append(abs(naive - actual))
    model_mae, baseline_mae = _mae(model_errors), _mae(baseline_errors)
    in_sample = [abs(y[t] - y[t - lag]) for t in range(lag, first)]
    scale = _mae(in_sample) if in_sample else 0.0
    return Backtest(
        method=method,
        baseline="seasonal naive" if lag > 1 else "naive",
        origins=window,
        lead=lead,
        model_mae=_decimal(model_mae, quantum),
        baseline_mae=_decimal(baseline_mae, quantum),
        relative_mae=_ratio(model_mae, baseline_mae),
        mase=_ratio(model_mae, scale),
    )


def _ratio(numerator: float, denominator: float) -> Decimal | None:
    if denominator <= 0:
        return None
    return _decimal(numerator / denominator, _RATIO)


def consume(
    plan: DemandSeries,
    orders: Iterable[Sale],
    *,
    backward: int = 0,
    forward: int = 0,
) -> tuple[BucketDemand, ...]:
    """Per-bucket demand after booked orders consume the forecast `plan` (see module docstring).

    Orders outside the plan's buckets consume within their window but are not reported: MRP
    plans them as orders anyway.
    """
    if backward < 0 or forward < 0:
        raise Invalid(f"consumption windows must not be negative: {backward}, {forward}")
    booked = _per_bucket(orders, plan.bucket)
    remaining = list(plan.values)
    size = len(remaining)
    for day in sorted(booked):
        at = (day - plan.start) // plan.bucket.length  # negative or >= size: outside the plan
        open_ = booked[day]
        reach = [at - k for k in range(backward + 1)] + [at + k for k in range(1, forward + 1)]
        for i in reach:
            if open_ == 0:
                break
            if 0 <= i < size:
                taken = min(open_, remaining[i])
                remaining[i] -= taken
                open_ -= taken
    return tuple(
        BucketDemand(
            start=start,
            forecast=value,
            orders=booked.get(start, _ZERO),
            consumed=value - left,
        )
        for start, value, left in zip(plan.starts, plan.values, remaining, strict=True)
    )
