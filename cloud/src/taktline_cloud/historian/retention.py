"""Retention: raw samples and rollups deleted when expired, per metric class, in bounded batches.

Metrics fall in three classes (`metric_class`): `counter` (good and scrap counters), `state`
(machine state and fault code: a value that holds until the next reading) and `process`
(everything else). Each table — raw `samples`, `rollup_1m`, `rollup_1h` — keeps each class for
its own number of days, or forever (`RetentionPolicy`, from `CloudSettings.retention`).
Cutoffs are whole minutes for raw samples and whole hours for rollups, so a minute or an hour is
deleted entirely or not at all.

Whatever its age, a row is kept while something still needs it:
- a raw sample whose minute is queued in `rollup_pending`, and the series' later samples: the
  rollup job recomputes a minute from its raw samples, which must all still be there; likewise
  the series' 1-minute and hourly rows from that hour on;
- a 1-minute row of an hour that still has raw samples of its series: a late sample makes the
  rollup job recompute its minute, then its hour from the hour's 1-minute rows. So 1-minute
  rows live at least as long as the raw samples they come from, whatever their own setting;
- counter samples a work order may still count: from the start of the earliest order on the
  machine's line that is running, held or completed (a late reading still corrects a completed
  order; only closing it settles it; aborted orders are never posted again), plus the last
  reading at or before that start (the baseline the count starts from). A machine that is on
  no line is held from the earliest such start on any line;
- for counters and states, the last reading at or before the cutoff: the value at the edge of
  the kept history stays known (the baseline of the next order, the state a history window
  opens in), however long the machine has been silent.

A run walks every series (machine, metric) of each table in key order, finding the next series
by an index seek on the (machine, metric, time) key (a skip scan: the cost is per series, not per
row), and deletes a series' expired rows as one range. Each step is one transaction that deletes
at most `batch` rows and looks at most `MAX_SERIES_PER_STEP` series, then hands back a cursor:
a first run after years holds no long lock, and ingest, which shares the worker thread, gets its
turn between steps. On PostgreSQL an advisory lock lets one ingest worker purge at a time.

TimescaleDB: when `samples` is a hypertable (`Database.hypertable`), `drop_chunks` would be
cheaper than DELETE, but only for chunks older than every class's retention and every hold
above. The extension cannot be installed here to test that, so the same portable DELETE path
runs on hypertables too.

Known gap: a sample arriving for a minute whose raw samples are already deleted (a dead letter
replayed months later, a redelivery of a deleted key) queues that minute again, and the rollup
job recomputes it from what is left, so that minute's and hour's rollups then hold the late
sample only. The fix belongs to ingest or the rollup job: leave minutes older than the raw
retention alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, get_args

from taktline_cloud.historian.rollups import hour_of, minute_of
from taktline_cloud.production.work_orders import WorkOrderStatus
from taktline_cloud.settings import RetentionSettings
from taktline_cloud.storage.database import Database
from taktline_cloud.storage.session import Executor
from taktline_cloud.storage.sql import to_datetime
from taktline_contract.metrics import COUNTER_METRICS, FAULT_CODE, MACHINE_STATE

log = logging.getLogger(__name__)

MetricClass = Literal["process", "counter", "state"]
Table = Literal["samples", "rollup_1m", "rollup_1h"]
METRIC_CLASSES: Final[tuple[MetricClass, ...]] = get_args(MetricClass)
TABLES: Final[tuple[Table, ...]] = get_args(Table)
"""In the order a run visits them: raw samples first, so 1-minute rows see what is left."""

STATE_METRICS: Final = frozenset({MACHINE_STATE, FAULT_CODE})
"""Series whose value holds until the next reading, like a counter's, but are not counted."""

HOLDS_COUNTERS: Final = frozenset(
    {WorkOrderStatus.RUNNING, WorkOrderStatus.HELD, WorkOrderStatus.COMPLETED}
)
"""Started orders whose counts may still be posted (see the module docstring)."""

DEFAULT_BATCH: Final = 10_000
"""Rows deleted per transaction, at most."""
MAX_SERIES_PER_STEP: Final = 200
"""Series looked at per transaction, at most (bounds a step that finds nothing to delete)."""
PURGE_LOCK: Final = 0x7A4B_71E1
"""PostgreSQL advisory lock id: one ingest worker purges at a time per database."""

_SETTINGS_GROUP: Final[dict[Table, str]] = {
    "samples": "raw",
    "rollup_1m": "rollup_1m",
    "rollup_1h": "rollup_1h",
}
_TIME: Final[dict[Table, str]] = {"samples": "ts", "rollup_1m": "bucket", "rollup_1h": "bucket"}


def metric_class(metric: str) -> MetricClass:
    """The retention class of a metric."""
    if metric in COUNTER_METRICS:
        return "counter"
    if metric in STATE_METRICS:
        return "state"
    return "process"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days each table keeps each metric class; a missing or None entry keeps forever."""

    days: Mapping[tuple[Table, MetricClass], int | None] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: RetentionSettings) -> RetentionPolicy:
        """The policy the cloud's settings describe."""
        return cls(
            {
                (table, klass): getattr(getattr(settings, _SETTINGS_GROUP[table]), klass)
                for table in TABLES
                for klass in METRIC_CLASSES
            }
        )

    def expires(self, table: Table) -> bool:
        """True when some class of `table` is not kept forever (else a run skips the table)."""
        return any(self.days.get((table, klass)) is not None for klass in METRIC_CLASSES)

    def cutoff(self, table: Table, klass: MetricClass, now: datetime) -> datetime | None:
        """Rows of `table` and `klass` before this instant have expired; None: never."""
        days = self.days.get((table, klass))
        if days is None:
            return None
        at = now - timedelta(days=days)
        return minute_of(at) if table == "samples" else hour_of(at)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a run goes on: a table, and the series it stopped at."""

    table: Table = "samples"
    series: tuple[str, str] | None = None
    """(machine, metric) last looked at; None: the table's first series."""
    again: bool = False
    """True when `series` still has expired rows (the budget ran out in it)."""


@dataclass(frozen=True, slots=True)
class CounterHold:
    """A work order that keeps counter samples older than their retention."""

    work_order: str
    status: WorkOrderStatus
    since: datetime


@dataclass(frozen=True, slots=True)
class PurgeStep:
    """What one transaction of a run deleted, and where the run goes on."""

    deleted: Mapping[Table, int]
    next: Cursor | None
    """None when the run is done (or `busy`)."""
    busy: bool = False
    """Another worker holds the purge lock: this run stops and leaves the work to it."""
    held: CounterHold | None = None
    """The order holding counter samples the longest, when that is beyond their retention."""


def purge_step(
    db: Database,
    policy: RetentionPolicy,
    now: datetime,
    cursor: Cursor | None = None,
    *,
    batch: int = DEFAULT_BATCH,
) -> PurgeStep:
    """Delete up to `batch` expired rows from `cursor` on, in one transaction."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    at = cursor or Cursor()
    deleted = dict.fromkeys(TABLES, 0)
    budget = batch
    table: Table | None = at.table if policy.expires(at.table) else _next_table(policy, at.table)
    series, again = (at.series, at.again) if table == at.table else (None, False)
    if table is None:
        return PurgeStep(deleted, None)
    with db.transaction() as tx:
        x = tx.executor
        if not _take_lock(x):
            return PurgeStep(deleted, None, busy=True)
        holds = _Holds.read(x, now)
        counter_cutoff = policy.cutoff("samples", "counter", now)
        held = holds.earliest
        if held is None or counter_cutoff is None or held.since >= counter_cutoff:
            held = None
        for _ in range(MAX_SERIES_PER_STEP):
            found = _next_series(x, table, series, again)
            if found is None:
                following = _next_table(policy, table)
                if following is None:
                    return PurgeStep(deleted, None, held=held)
                table, series, again = following, None, False
                continue
            limit = _limit(x, table, found, policy=policy, holds=holds, now=now)
            count, more = (0, False)
            if limit is not None:
                count, more = _delete_before(x, table, found, limit, budget=budget)
            deleted[table] += count
            budget -= count
            series, again = found, more
            if budget <= 0:
                break
    return PurgeStep(deleted, Cursor(table, series, again), held=held)


def purge_all(
    db: Database, policy: RetentionPolicy, now: datetime, *, batch: int = DEFAULT_BATCH
) -> dict[Table, int]:
    """Run steps until nothing expired is left; rows deleted per table."""
    totals = dict.fromkeys(TABLES, 0)
    cursor: Cursor | None = None
    while True:
        step = purge_step(db, policy, now, cursor, batch=batch)
        for table, count in step.deleted.items():
            totals[table] += count
        if step.next is None:
            return totals
        cursor = step.next


def _next_table(policy: RetentionPolicy, table: Table) -> Table | None:
    """The table after `table` that has something to expire, if any."""
    later = TABLES[TABLES.index(table) + 1 :]
    return next((t for t in later if policy.expires(t)), None)


def _take_lock(x: Executor) -> bool:
    """PostgreSQL: this transaction's purge lock, if free. SQLite: a write is already alone."""
    if x.dialect.backend != "postgresql":
        return True
    return bool(x.query("SELECT pg_try_advisory_xact_lock(?)", (PURGE_LOCK,))[0][0])


@dataclass(frozen=True, slots=True)
class _Holds:
    """Per machine, the instant from which its counter samples are kept (see the docstring)."""

    by_machine: Mapping[str, datetime]
    default: datetime
    """For a machine on no line: the earliest hold of any line (or now)."""
    earliest: CounterHold | None

    @classmethod
    def read(cls, x: Executor, now: datetime) -> _Holds:
        statuses = sorted(str(s) for s in HOLDS_COUNTERS)
        orders = [
            (number, line, WorkOrderStatus(status), to_datetime(started))
            for number, line, status, started in x.query(
                "SELECT number, line, status, started_at FROM work_orders"
                f" WHERE started_at IS NOT NULL AND status IN ({', '.join('?' for _ in statuses)})",
                statuses,
            )
        ]
        # Now, too: the newest reading of every counter is the baseline of the next order.
        by_line: dict[str, datetime] = {}
        for _, line, _, started in orders:
            by_line[line] = min(started, by_line.get(line, now))
        by_machine = {
            code: min(now, by_line.get(line, now))
            for code, line in x.query("SELECT code, line FROM machines")
        }
        first = min(orders, key=lambda o: o[3], default=None)
        earliest = CounterHold(first[0], first[2], first[3]) if first else None
        return cls(by_machine, min([now, *by_line.values()]), earliest)

    def counters_from(self, machine: str) -> datetime:
        """Counter samples of `machine` at or after this instant are kept."""
        return self.by_machine.get(machine, self.default)


def _next_series(
    x: Executor, table: Table, after: tuple[str, str] | None, again: bool
) -> tuple[str, str] | None:
    """The first (machine, metric) of `table` after `after` (at it, when `again`): index seeks."""
    if after is None:
        rows = x.query(f"SELECT machine, metric FROM {table} ORDER BY machine, metric LIMIT 1")
    else:
        machine, metric = after
        after_metric = ">=" if again else ">"
        rows = x.query(
            f"SELECT machine, metric FROM {table} WHERE machine = ? AND metric {after_metric} ?"
            " ORDER BY metric LIMIT 1",
            (machine, metric),
        )
        if not rows:
            rows = x.query(
                f"SELECT machine, metric FROM {table} WHERE machine > ?"
                " ORDER BY machine, metric LIMIT 1",
                (machine,),
            )
    return (rows[0][0], rows[0][1]) if rows else None


def _limit(
    x: Executor,
    table: Table,
    series: tuple[str, str],
    *,
    policy: RetentionPolicy,
    holds: _Holds,
    now: datetime,
) -> datetime | None:
    """Rows of this series before the returned instant may go; None: none may."""
    machine, metric = series
    klass = metric_class(metric)
    limit = policy.cutoff(table, klass, now)
    if limit is None:
        return None
    pending = _first(
        x,
        "SELECT bucket FROM rollup_pending WHERE machine = ? AND metric = ?"
        " ORDER BY bucket LIMIT 1",
        series,
    )
    if table == "samples":
        if pending is not None:
            limit = min(limit, pending)
        if klass == "counter":
            limit = min(limit, minute_of(holds.counters_from(machine)))
        if klass != "process":
            # Keep the reading that gives the value at the limit (ts <= limit, as a baseline).
            baseline = _first(
                x,
                "SELECT ts FROM samples WHERE machine = ? AND metric = ? AND ts <= ?"
                " AND value_num IS NOT NULL ORDER BY ts DESC LIMIT 1",
                (*series, limit),
            )
            if baseline is not None:
                limit = min(limit, minute_of(baseline))
        return limit  # whole minutes: a minute's rollup is never recomputed from part of it
    if pending is not None:
        limit = min(limit, hour_of(pending))
    if table == "rollup_1m":
        oldest_raw = _first(
            x,
            "SELECT ts FROM samples WHERE machine = ? AND metric = ? ORDER BY ts LIMIT 1",
            series,
        )
        if oldest_raw is not None:
            limit = min(limit, hour_of(oldest_raw))
    return limit


def _first(x: Executor, statement: str, params: tuple[object, ...]) -> datetime | None:
    rows = x.query(statement, params)
    return to_datetime(rows[0][0]) if rows and rows[0][0] is not None else None


def _delete_before(
    x: Executor, table: Table, series: tuple[str, str], limit: datetime, *, budget: int
) -> tuple[int, bool]:
    """Delete the series' rows before `limit`, at most `budget` (oldest first).

    Returns how many were deleted and whether expired rows are left. One range delete: the
    times are unique within a series, so the row `budget` places in bounds the range exactly.
    """
    column = _TIME[table]
    beyond = _first(
        x,
        f"SELECT {column} FROM {table} WHERE machine = ? AND metric = ? AND {column} < ?"
        f" ORDER BY {column} LIMIT 1 OFFSET ?",
        (*series, limit, budget),
    )
    count = x.execute(
        f"DELETE FROM {table} WHERE machine = ? AND metric = ? AND {column} < ?",
        (*series, beyond or limit),
    )
    return count, beyond is not None


@dataclass(slots=True)
class RetentionRun:
    """Totals of one run of the periodic job."""

    deleted: dict[Table, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    steps: int = 0
    busy: bool = False
    held: CounterHold | None = None
    finished: bool = False


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def purge_once(
    run: Callable[[Callable[[], PurgeStep]], Awaitable[PurgeStep]],
    db: Database,
    policy: RetentionPolicy,
    stop: asyncio.Event,
    *,
    now: datetime,
    batch: int = DEFAULT_BATCH,
    on_deleted: Callable[[Table, int], None] | None = None,
) -> RetentionRun:
    """One run, each step through `run` (the worker), until done or `stop` is set.

    `on_deleted(table, rows)` hears of each step's deletions as they are committed.
    """
    totals = RetentionRun()
    cursor: Cursor | None = None
    while not stop.is_set():
        step = await run(functools.partial(purge_step, db, policy, now, cursor, batch=batch))
        totals.steps += 1
        for table, count in step.deleted.items():
            totals.deleted[table] += count
            if on_deleted is not None and count > 0:
                on_deleted(table, count)
        totals.busy, totals.held = step.busy, step.held or totals.held
        if step.next is None:
            totals.finished = True
            break
        cursor = step.next
    return totals


async def retention_periodically(
    run: Callable[[Callable[[], PurgeStep]], Awaitable[PurgeStep]],
    db: Database,
    policy: RetentionPolicy,
    interval_s: float,
    stop: asyncio.Event,
    *,
    clock: Callable[[], datetime] = _utc_now,
    batch: int = DEFAULT_BATCH,
    on_deleted: Callable[[Table, int], None] | None = None,
) -> None:
    """Purge expired rows at once and then every `interval_s`, until `stop`."""
    failing = False
    warned: CounterHold | None = None
    while not stop.is_set():
        started = time.monotonic()
        try:
            result = await purge_once(
                run, db, policy, stop, now=clock(), batch=batch, on_deleted=on_deleted
            )
        except Exception:
            # Nothing is lost by skipping a run: what has expired is deleted by the next one.
            if not failing:
                log.exception("retention run failed; retrying every %ss", interval_s)
                failing = True
        else:
            if failing:
                log.info("retention runs work again")
                failing = False
            _report(result, time.monotonic() - started)
            if result.held is not None and result.held != warned:
                hold = result.held
                log.warning(
                    "counter samples older than their retention are kept since %s: work order"
                    " %s (%s) may still be posted from them until it is closed",
                    hold.since.isoformat(),
                    hold.work_order,
                    hold.status,
                )
            warned = result.held
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await stop.wait()


def _report(result: RetentionRun, seconds: float) -> None:
    if result.busy:
        log.info("retention: another worker is purging; this one waits for its next run")
        return
    d = result.deleted
    level = logging.INFO if any(d.values()) else logging.DEBUG
    log.log(
        level,
        "retention deleted %d raw samples, %d 1-minute and %d hourly rollups"
        " in %d transactions (%.1f s)%s",
        d["samples"],
        d["rollup_1m"],
        d["rollup_1h"],
        result.steps,
        seconds,
        "" if result.finished else "; stopped before the end",
    )
