"""Rollups of numeric samples into 1-minute and 1-hour buckets (min/max/avg/last/count).

Every numeric sample stored queues its (machine, metric, minute) in `rollup_pending` (a trigger
made by migration 4), late and replayed samples included. `refresh_rollups` takes a batch of
queued minutes, recomputes each from the raw samples (never adds to what is stored, so a late
sample is counted exactly once and running the job twice changes nothing), then recomputes the
hours those minutes fall in from the 1-minute rows. The averages stay exact: sum and count are
stored, and `avg = sum / count` in Decimal (stored too, so a trend read computes nothing).

The same statements run on SQLite and PostgreSQL; the arithmetic is done here in Decimal because
SQLite stores decimals as text (its SUM would be a binary float). TimescaleDB continuous
aggregates, when the extension is present, are a later step; this job is the portable path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

from taktline_cloud.storage.database import Database
from taktline_cloud.storage.session import Executor
from taktline_cloud.storage.sql import to_datetime, to_decimal

log = logging.getLogger(__name__)

Resolution = Literal["1m", "1h"]
TABLE: Final[dict[Resolution, str]] = {"1m": "rollup_1m", "1h": "rollup_1h"}
MINUTE: Final = timedelta(minutes=1)
HOUR: Final = timedelta(hours=1)
DEFAULT_BATCH: Final = 20_000
"""Queued minutes per transaction: bounds one run's memory and lock time after an outage."""

_COLUMNS: Final = (
    "machine, metric, bucket, value_min, value_max, value_sum, value_avg, value_last, last_ts,"
    " sample_count"
)


@dataclass(frozen=True, slots=True)
class Rollup:
    """One bucket of one metric of one machine."""

    machine: str
    metric: str
    bucket: datetime
    """Start of the bucket, aware UTC."""
    minimum: Decimal
    maximum: Decimal
    total: Decimal
    last: Decimal
    """The value of the newest sample in the bucket."""
    last_ts: datetime
    count: int

    @property
    def average(self) -> Decimal:
        """Exact mean of the bucket's samples."""
        return self.total / self.count

    def row(self) -> tuple[object, ...]:
        """The columns of `_COLUMNS`, in order."""
        return (
            self.machine,
            self.metric,
            self.bucket,
            self.minimum,
            self.maximum,
            self.total,
            self.average,
            self.last,
            self.last_ts,
            self.count,
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Rollup:
        """From the columns of `_COLUMNS`."""
        return cls(
            machine=row[0],
            metric=row[1],
            bucket=to_datetime(row[2]),
            minimum=to_decimal(row[3]),
            maximum=to_decimal(row[4]),
            total=to_decimal(row[5]),
            last=to_decimal(row[7]),
            last_ts=to_datetime(row[8]),
            count=int(row[9]),
        )


def minute_of(at: datetime) -> datetime:
    """The start of the minute `at` falls in (UTC)."""
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def hour_of(at: datetime) -> datetime:
    """The start of the hour `at` falls in (UTC)."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def aggregate(
    machine: str, metric: str, bucket: datetime, points: Iterable[tuple[datetime, Decimal]]
) -> Rollup | None:
    """The rollup of (time, value) points, or None when there are none (pure)."""
    it = iter(points)
    first = next(it, None)
    if first is None:
        return None
    last_ts, last = first
    low = high = total = last
    count = 1
    for at, value in it:
        low, high, total, count = min(low, value), max(high, value), total + value, count + 1
        if at >= last_ts:
            last_ts, last = at, value
    return Rollup(machine, metric, bucket, low, high, total, last, last_ts, count)


def combine(machine: str, metric: str, bucket: datetime, parts: Iterable[Rollup]) -> Rollup | None:
    """The rollup of a coarser bucket from the finer rollups inside it (pure)."""
    parts = list(parts)
    if not parts:
        return None
    newest = max(parts, key=lambda p: p.last_ts)
    return Rollup(
        machine,
        metric,
        bucket,
        min(p.minimum for p in parts),
        max(p.maximum for p in parts),
        sum((p.total for p in parts), Decimal(0)),
        newest.last,
        newest.last_ts,
        sum(p.count for p in parts),
    )


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What one `refresh_rollups` batch did."""

    minutes: int
    hours: int
    more: bool
    """True when queued minutes are left for the next batch."""


def refresh_rollups(db: Database, *, batch: int = DEFAULT_BATCH) -> RefreshResult:
    """Recompute one batch of queued minutes and their hours, in one transaction."""
    with db.transaction() as tx:
        x = tx.executor
        claimed = _claim(x, batch)
        hours: set[tuple[str, str, datetime]] = set()
        by_series: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        for machine, metric, bucket in claimed:
            by_series[(machine, metric)].append(bucket)
            hours.add((machine, metric, hour_of(bucket)))
        for (machine, metric), minutes in by_series.items():
            _redo_minutes(x, machine, metric, minutes)
        by_hour: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        for machine, metric, hour in hours:
            by_hour[(machine, metric)].append(hour)
        for (machine, metric), starts in by_hour.items():
            _redo_hours(x, machine, metric, starts)
        now = datetime.now(UTC)
        for resolution, done in (("1m", len(claimed)), ("1h", len(hours))):
            x.execute(
                "INSERT INTO rollup_watermark (rollup, refreshed_at, buckets) VALUES (?, ?, ?)"
                " ON CONFLICT (rollup) DO UPDATE SET refreshed_at = excluded.refreshed_at,"
                " buckets = excluded.buckets",
                (resolution, now, done),
            )
        more = bool(x.query("SELECT 1 FROM rollup_pending LIMIT 1"))
    return RefreshResult(minutes=len(claimed), hours=len(hours), more=more)


def refresh_all(db: Database, *, batch: int = DEFAULT_BATCH) -> int:
    """Run batches until the queue is empty; the number of minutes recomputed."""
    total = 0
    while True:
        result = refresh_rollups(db, batch=batch)
        total += result.minutes
        if not result.more:
            return total


def _claim(x: Executor, batch: int) -> list[tuple[str, str, datetime]]:
    """Take queued minutes off the queue (deleted in this transaction).

    On PostgreSQL a sample stored concurrently for a minute being taken waits for this delete
    and queues its minute again, so no sample is left out of its bucket.
    """
    rows = x.query(
        "DELETE FROM rollup_pending WHERE (machine, metric, bucket) IN"
        " (SELECT machine, metric, bucket FROM rollup_pending"
        " ORDER BY machine, metric, bucket LIMIT ?) RETURNING machine, metric, bucket",
        (batch,),
    )
    return [(r[0], r[1], to_datetime(r[2])) for r in rows]


def _redo_minutes(x: Executor, machine: str, metric: str, minutes: list[datetime]) -> None:
    wanted = set(minutes)
    points: dict[datetime, list[tuple[datetime, Decimal]]] = defaultdict(list)
    for start, end in _spans(sorted(wanted), MINUTE):
        for ts, value in x.query(
            "SELECT ts, value_num FROM samples WHERE machine = ? AND metric = ? AND ts >= ?"
            " AND ts < ? AND value_num IS NOT NULL",
            (machine, metric, start, end),
        ):
            at = to_datetime(ts)
            bucket = minute_of(at)
            if bucket in wanted:
                points[bucket].append((at, to_decimal(value)))
    _store(
        x,
        "rollup_1m",
        (machine, metric),
        wanted,
        [aggregate(machine, metric, b, points[b]) for b in sorted(wanted)],
    )


def _redo_hours(x: Executor, machine: str, metric: str, hours: list[datetime]) -> None:
    wanted = set(hours)
    parts: dict[datetime, list[Rollup]] = defaultdict(list)
    for start, end in _spans(sorted(wanted), HOUR):
        for row in x.query(
            f"SELECT {_COLUMNS} FROM rollup_1m WHERE machine = ? AND metric = ? AND bucket >= ?"
            " AND bucket < ?",
            (machine, metric, start, end),
        ):
            minute = Rollup.from_row(row)
            hour = hour_of(minute.bucket)
            if hour in wanted:
                parts[hour].append(minute)
    _store(
        x,
        "rollup_1h",
        (machine, metric),
        wanted,
        [combine(machine, metric, h, parts[h]) for h in sorted(wanted)],
    )


def _spans(starts: list[datetime], width: timedelta) -> list[tuple[datetime, datetime]]:
    """Sorted bucket starts merged into contiguous [start, end) ranges (fewer queries)."""
    spans: list[tuple[datetime, datetime]] = []
    for start in starts:
        if spans and spans[-1][1] >= start:
            spans[-1] = (spans[-1][0], start + width)
        else:
            spans.append((start, start + width))
    return spans


def _store(
    x: Executor,
    table: str,
    series: tuple[str, str],
    buckets: set[datetime],
    rollups: list[Rollup | None],
) -> None:
    """Replace the rows of these buckets (a bucket whose samples are gone loses its row)."""
    machine, metric = series
    x.executemany(
        f"DELETE FROM {table} WHERE machine = ? AND metric = ? AND bucket = ?",
        [(machine, metric, b) for b in sorted(buckets)],
    )
    rows = [r.row() for r in rollups if r is not None]
    if rows:
        x.executemany(
            f"INSERT INTO {table} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
        )


def read_rollups(
    db: Database,
    resolution: Resolution,
    *,
    machines: Sequence[str],
    metrics: Sequence[str],
    start: datetime,
    end: datetime,
) -> list[Rollup]:
    """Stored rollups of the buckets starting in [start, end), by machine, metric, bucket."""
    table = TABLE[resolution]
    result: list[Rollup] = []
    with db.transaction(write=False) as tx:
        for machine in machines:
            for metric in metrics:
                result.extend(
                    Rollup.from_row(r)
                    for r in tx.executor.query(
                        f"SELECT {_COLUMNS} FROM {table} WHERE machine = ? AND metric = ?"
                        " AND bucket >= ? AND bucket < ? ORDER BY bucket",
                        (machine, metric, start, end),
                    )
                )
    return result


def read_raw(
    db: Database,
    *,
    machines: Sequence[str],
    metrics: Sequence[str],
    start: datetime,
    end: datetime,
    limit: int,
) -> list[tuple[str, str, datetime, Decimal]] | None:
    """Numeric samples in [start, end), or None when there are more than `limit`."""
    result: list[tuple[str, str, datetime, Decimal]] = []
    with db.transaction(write=False) as tx:
        for machine in machines:
            for metric in metrics:
                rows = tx.executor.query(
                    "SELECT ts, value_num FROM samples WHERE machine = ? AND metric = ?"
                    " AND ts >= ? AND ts < ? AND value_num IS NOT NULL ORDER BY ts LIMIT ?",
                    (machine, metric, start, end, limit - len(result) + 1),
                )
                result.extend((machine, metric, to_datetime(t), to_decimal(v)) for t, v in rows)
                if len(result) > limit:
                    return None
    return result


ROLLUP_INTERVAL_S: Final = 10.0
"""How often the cloud refreshes rollups: trends lag raw samples by at most about this."""


async def rollup_periodically(
    run: Callable[[Callable[[], RefreshResult]], Awaitable[RefreshResult]],
    db: Database,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    """Refresh rollups every `interval_s` until `stop`, each batch through `run` (the worker)."""
    failing = False
    while not stop.is_set():
        try:
            result = await run(lambda: refresh_rollups(db))
        except Exception:
            # Queued minutes stay queued: the next tick redoes them. Say so once, not each tick.
            if not failing:
                log.exception("rollup refresh failed; retrying every %ss", interval_s)
                failing = True
            result = RefreshResult(0, 0, more=False)
        else:
            if failing:
                log.info("rollup refresh works again")
                failing = False
        if result.more:
            continue  # a backlog (after an outage): next batch at once
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await stop.wait()


_VALUES: Final = ("value_min", "value_max", "value_avg", "value_last")


def trend_json(
    db: Database,
    resolution: Resolution,
    *,
    machine: str,
    metric: str,
    start: datetime,
    end: datetime,
) -> str:
    """Rollups of one series in [start, end) as one JSON object of columns, built by the database.

    `{"t": [...], "min": [...], "max": [...], "avg": [...], "last": [...], "count": [...]}`, times
    as ISO UTC text with a Z, decimals as text exactly as stored. A year of minutes is 525 600
    buckets: made into Python objects they cost more than the query itself, so the database
    aggregates them into JSON text that the API passes through.
    """
    table = TABLE[resolution]
    fields = ("t", "min", "max", "avg", "last", "count")
    if db.backend == "postgresql":
        when = "to_char(bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
        columns = (when, *(f"{c}::text" for c in _VALUES), "sample_count")
        parts = ", ".join(
            f"'{f}', COALESCE(json_agg({c}), '[]'::json)"
            for f, c in zip(fields, columns, strict=True)
        )
        statement = f"SELECT json_build_object({parts})::text FROM (SELECT * FROM {table}"
    else:
        when = "substr(bucket, 1, 19) || 'Z'"  # buckets are whole minutes
        columns = (when, *_VALUES, "sample_count")
        parts = ", ".join(
            f"'{f}', json_group_array({c})" for f, c in zip(fields, columns, strict=True)
        )
        statement = f"SELECT json_object({parts}) FROM (SELECT * FROM {table}"
    # The aggregates take the rows in the sorted subquery's order (one sort, not one per
    # column: half the time on PostgreSQL); the primary key index delivers them sorted.
    order = " ORDER BY bucket) AS ordered"
    with db.transaction(write=False) as tx:
        rows = tx.executor.query(
            f"{statement} WHERE machine = ? AND metric = ? AND bucket >= ? AND bucket < ?{order}",
            (machine, metric, start, end),
        )
    return str(rows[0][0])
