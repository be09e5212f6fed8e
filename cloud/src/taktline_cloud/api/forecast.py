"""Demand forecast of an item: its sales history, the statistical forecast, what booked orders
consume of it, and the backtest against a naive forecast (so a screen can show "error vs naive").

    GET /api/items/FG-100/forecast?bucket=week&horizon=12

History is the item's sales by requested date (see `storage.forecasting`) from its first sale's
bucket through the last bucket that is over before `as_of` (default: today, UTC); the bucket
holding `as_of` is forecast, and orders booked from it on consume the forecast.
The statistics run on the service's worker thread, never on the event loop (a fit takes tens of
milliseconds, and the forecaster's warning filter is process-global: one thread at a time).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection

from taktline_cloud.api.deps import Context
from taktline_cloud.api.trends import historian_database
from taktline_cloud.errors import Conflict, NotFound
from taktline_cloud.planning.forecast import (
    Bucket,
    backtest,
    consume,
    demand_series,
    forecast,
)
from taktline_cloud.storage.database import Database
from taktline_cloud.storage.forecasting import item_exists, sales_by_requested_date

router = APIRouter(prefix="/api", tags=["planning"])

MIN_HISTORY: Final = 4
"""Buckets of history below which a forecast is refused: too few to judge it against naive."""
MAX_HORIZON: Final = 366
BucketName = Literal["day", "week"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such item"},
    409: {"description": "Too little sales history to forecast (fewer than 4 buckets)"},
    422: {"description": "Bad parameters"},
}


class BucketQuantityPublic(BaseModel):
    """One bucket of history: its first day and the quantity requested in it."""

    model_config = ConfigDict(extra="forbid")
    start: date
    quantity: Decimal


class ForecastBucketPublic(BaseModel):
    """One forecast bucket and what booked orders consume of it."""

    model_config = ConfigDict(extra="forbid")
    start: date
    forecast: Decimal
    orders: Decimal = Field(description="booked for delivery in this bucket")
    remaining: Decimal = Field(description="forecast not consumed by orders: what MRP adds")


class BacktestPublic(BaseModel):
    """Rolling-origin one-step errors of the forecaster and of the naive baseline."""

    model_config = ConfigDict(extra="forbid")
    method: str
    baseline: str = Field(description="'seasonal naive' or 'naive'")
    origins: int
    lead: int
    model_mae: Decimal
    baseline_mae: Decimal
    relative_mae: Decimal | None = Field(
        description="model MAE / baseline MAE; below 1 the forecast beats the baseline; "
        "null when the baseline made no error"
    )
    mase: Decimal | None = Field(
        description="model MAE / in-sample naive MAE (Hyndman & Koehler); null when that is 0"
    )


class ItemForecastPublic(BaseModel):
    """An item's demand forecast with its history and backtest."""

    model_config = ConfigDict(extra="forbid")
    item: str
    bucket: BucketName
    as_of: date
    method: str
    season_length: int
    history: list[BucketQuantityPublic]
    forecast: list[ForecastBucketPublic]
    backtest: BacktestPublic


def item_forecast(
    database: Database, item: str, bucket_name: BucketName, horizon: int, as_of: date
) -> ItemForecastPublic:
    """The forecast document (blocking: run it on the worker thread)."""
    bucket = Bucket(bucket_name)
    current = bucket.start_of(as_of)
    with database.transaction(write=False) as tx:
        if not item_exists(tx, item):
            raise NotFound(f"no item {item!r}")
        sales = sales_by_requested_date(tx, item, before=current)
        orders = sales_by_requested_date(tx, item, since=current)
    count = (current - bucket.start_of(sales[0][0])) // bucket.length if sales else 0
    if count < MIN_HISTORY:
        raise Conflict(
            f"item {item!r} has {count} {bucket} bucket(s) of sales history before {current};"
            f" a forecast needs at least {MIN_HISTORY}"
        )
    history = demand_series(sales, bucket, through=current - timedelta(days=1))
    result = forecast(history, horizon)
    check = backtest(history)
    consumed = consume(result.series, orders)
    return ItemForecastPublic(
        item=item,
        bucket=bucket_name,
        as_of=as_of,
        method=result.method.value,
        season_length=result.season_length,
        history=[
            BucketQuantityPublic(start=start, quantity=quantity)
            for start, quantity in zip(history.starts, history.values, strict=True)
        ],
        forecast=[
            ForecastBucketPublic(
                start=row.start,
                forecast=row.forecast,
                orders=row.orders,
                remaining=row.remaining_forecast,
            )
            for row in consumed
        ],
        backtest=BacktestPublic(
            method=check.method.value,
            baseline=check.baseline,
            origins=check.origins,
            lead=check.lead,
            model_mae=check.model_mae,
            baseline_mae=check.baseline_mae,
            relative_mae=check.relative_mae,
            mase=check.mase,
        ),
    )


@router.get("/items/{item}/forecast", responses=_ERRORS)
async def get_item_forecast(
    context: Context,
    connection: HTTPConnection,
    item: str,
    *,
    bucket: Annotated[BucketName, Query(description="day or ISO week")] = "week",
    horizon: Annotated[
        int, Query(ge=1, le=MAX_HORIZON, description="buckets to forecast from as_of's bucket")
    ] = 12,
    as_of: Annotated[
        date | None, Query(description="forecast as if today were this date (default: today, UTC)")
    ] = None,
) -> ItemForecastPublic:
    """The item's sales history, forecast (less booked orders) and backtest against naive."""
    database = historian_database(connection)
    day = as_of if as_of is not None else datetime.now(UTC).date()
    return await context.gateway.worker.run(
        lambda: item_forecast(database, item, bucket, horizon, day)
    )
