"""Trends: raw samples or 1-minute / 1-hour rollups of machine metrics over a time range, and
machine state history.

    GET /api/trends?machines=M1,M2&metrics=Temperature&from=…&to=…&bucket=raw|1m|1h
    GET /api/machines/M1/states?from=…&to=…

Series are columnar (one list per field) so a year of 1-minute buckets stays one compact
document; decimals are strings, exactly as stored. Raw answers are capped: ask for a bucket.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Final, Literal

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection

from taktline_cloud.api.deps import Context
from taktline_cloud.errors import Invalid
from taktline_cloud.historian import rollups
from taktline_cloud.historian.states import state_history
from taktline_cloud.storage.database import Database
from taktline_contract.metrics import MACHINE_STATE

router = APIRouter(prefix="/api")

RAW_POINT_CAP: Final = 100_000
JSON: Final = "application/json"
MAX_SERIES: Final = 50
Bucket = Literal["raw", "1m", "1h"]


def historian_database(connection: HTTPConnection) -> Database:
    """The database the composition root put in `app.state.historian` for trend reads."""
    database = getattr(connection.app.state, "historian", None)
    if not isinstance(database, Database):
        raise RuntimeError("the cloud is not started: app.state.historian is not set")
    return database


def _names(raw: str, what: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    if not names:
        raise Invalid(f"{what}: give at least one name (comma-separated)")
    return names


def _aware(at: datetime, what: str) -> datetime:
    if at.tzinfo is None:
        raise Invalid(f"{what}: {at.isoformat()} has no time zone (add Z or an offset)")
    return at.astimezone(UTC)


def _text(value: Decimal) -> str:
    return str(value)


def _instant(at: datetime) -> str:
    """ISO-8601 UTC with a Z, to the millisecond (samples' precision)."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TrendSeriesPublic(BaseModel):
    """One series, columnar: element i of every list is one point (raw) or bucket (1m, 1h)."""

    model_config = ConfigDict(extra="forbid")
    machine: str
    metric: str
    t: list[str] = Field(description="times, ISO 8601 UTC: the sample's, or the bucket's start")
    value: list[str] | None = Field(None, description="bucket=raw: each sample's exact decimal")
    min: list[str] | None = Field(None, description="bucket=1m|1h: the least value")
    max: list[str] | None = Field(None, description="bucket=1m|1h: the greatest value")
    avg: list[str] | None = Field(None, description="bucket=1m|1h: the exact mean")
    last: list[str] | None = Field(None, description="bucket=1m|1h: the newest sample's value")
    count: list[int] | None = Field(None, description="bucket=1m|1h: samples in the bucket")


class TrendPublic(BaseModel):
    """The answer of GET /api/trends (decimals are strings, exactly as stored)."""

    model_config = ConfigDict(extra="forbid")
    bucket: Bucket
    from_: str = Field(alias="from", description="start of the range, ISO 8601 UTC")
    to: str = Field(description="end of the range (exclusive), ISO 8601 UTC")
    series: list[TrendSeriesPublic]


@router.get(
    "/trends",
    tags=["historian"],
    response_class=Response,
    # Written straight from the database's JSON (never parsed here): the model documents it.
    responses={200: {"model": TrendPublic, "description": "the series, columnar"}},
)
async def trends(
    context: Context,
    connection: HTTPConnection,
    *,
    machines: Annotated[str, Query(description="Machine codes, comma-separated")],
    metrics: Annotated[str, Query(description="Metric names, comma-separated")],
    start: Annotated[datetime, Query(alias="from", description="Range start (inclusive)")],
    end: Annotated[datetime, Query(alias="to", description="Range end (exclusive)")],
    bucket: Annotated[Bucket, Query(description="raw samples, or 1m / 1h rollups")] = "1m",
) -> Response:
    """Series per (machine, metric): times with min/max/avg/last/count, or raw values."""
    machine_list, metric_list = _names(machines, "machines"), _names(metrics, "metrics")
    if len(machine_list) * len(metric_list) > MAX_SERIES:
        raise Invalid(f"at most {MAX_SERIES} series (machines x metrics) per request")
    start, end = _aware(start, "from"), _aware(end, "to")
    if end <= start:
        raise Invalid(f"'to' ({end.isoformat()}) must be after 'from' ({start.isoformat()})")
    database = historian_database(connection)
    series: dict[tuple[str, str], dict[str, list[object]]] = {
        (m, k): {} for m in machine_list for k in metric_list
    }
    if bucket == "raw":
        points = await context.gateway.worker.run(
            lambda: rollups.read_raw(
                database,
                machines=machine_list,
                metrics=metric_list,
                start=start,
                end=end,
                limit=RAW_POINT_CAP,
            )
        )
        if points is None:
            raise Invalid(
                f"more than {RAW_POINT_CAP} raw samples in the range: narrow it or use bucket=1m"
            )
        for key in series:
            series[key] = {"t": [], "value": []}
        for machine, metric, at, value in points:
            columns = series[(machine, metric)]
            columns["t"].append(_instant(at))
            columns["value"].append(_text(value))
        return Response(orjson.dumps(_document(bucket, start, end, series)), media_type=JSON)
    resolution: rollups.Resolution = bucket

    def read() -> list[tuple[str, str, str]]:
        return [
            (
                machine,
                metric,
                rollups.trend_json(
                    database, resolution, machine=machine, metric=metric, start=start, end=end
                ),
            )
            for machine, metric in series
        ]

    # The database wrote each series' columns as JSON text: spliced in, never parsed.
    head = orjson.dumps({"bucket": bucket, "from": _instant(start), "to": _instant(end)})
    parts = [
        orjson.dumps({"machine": machine, "metric": metric})[:-1] + b"," + columns.encode()[1:]
        for machine, metric, columns in await context.gateway.worker.run(read)
    ]
    body = head[:-1] + b',"series":[' + b",".join(parts) + b"]}"
    return Response(body, media_type=JSON)


def _document(
    bucket: str,
    start: datetime,
    end: datetime,
    series: dict[tuple[str, str], dict[str, list[object]]],
) -> dict[str, object]:
    return {
        "bucket": bucket,
        "from": _instant(start),
        "to": _instant(end),
        "series": [
            {"machine": machine, "metric": metric, **columns}
            for (machine, metric), columns in series.items()
        ],
    }


class StateIntervalPublic(BaseModel):
    """One interval of one state."""

    state: str
    start: datetime
    end: datetime
    seconds: float


class StateHistoryPublic(BaseModel):
    """A machine's state history over a window (`end` is clipped to now)."""

    machine: str
    start: datetime
    end: datetime
    intervals: list[StateIntervalPublic]
    seconds: dict[str, float]
    """Time in each state."""
    entries: dict[str, int]
    """How many times each state began inside the window."""


@router.get("/machines/{machine}/states", tags=["historian"])
async def machine_states(
    context: Context,
    connection: HTTPConnection,
    machine: str,
    *,
    start: Annotated[datetime, Query(alias="from", description="Window start (inclusive)")],
    end: Annotated[datetime, Query(alias="to", description="Window end (exclusive)")],
) -> StateHistoryPublic:
    """The machine's state intervals with durations, and time and entries per state."""
    start, end = _aware(start, "from"), _aware(end, "to")
    if end <= start:
        raise Invalid(f"'to' ({end.isoformat()}) must be after 'from' ({start.isoformat()})")
    # The last state holds until now, not into the future.
    end = max(start, min(end, datetime.now(UTC)))
    database = historian_database(connection)

    def read() -> list[tuple[datetime, Decimal]]:
        with database.transaction(write=False) as tx:
            return tx.counter_series(machine, MACHINE_STATE, start, end)

    history = state_history(await context.gateway.worker.run(read), start, end)
    return StateHistoryPublic(
        machine=machine,
        start=start,
        end=end,
        intervals=[
            StateIntervalPublic(
                state=i.state, start=i.start, end=i.end, seconds=i.duration.total_seconds()
            )
            for i in history.intervals
        ],
        seconds={state: d.total_seconds() for state, d in history.durations.items()},
        entries=history.entries,
    )
