"""Retention on both backends: expiry per class and table, what is held, batches, the job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from taktline_cloud.historian import retention
from taktline_cloud.historian.retention import (
    PURGE_LOCK,
    CounterHold,
    Cursor,
    RetentionPolicy,
    purge_all,
    purge_step,
    retention_periodically,
)
from taktline_cloud.historian.rollups import Rollup, read_rollups, refresh_all
from taktline_cloud.historian.samples import Sample
from taktline_cloud.live import ServiceWorker
from taktline_cloud.observability import RetentionMetrics
from taktline_cloud.production.work_orders import WorkOrderStatus
from taktline_cloud.service import PlantService
from taktline_cloud.settings import RetentionSettings
from taktline_cloud.storage import Database
from taktline_contract.metrics import GOOD_COUNT, MACHINE_STATE, SCRAP_COUNT, MachineState
from tests.support import Clock, wait_for

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
TEMP = "Temperature"
DAY = timedelta(days=1)
MS = timedelta(milliseconds=1)
PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
DEFAULTS = RetentionPolicy.from_settings(RetentionSettings())
NOTHING = {"samples": 0, "rollup_1m": 0, "rollup_1h": 0}


def policy(**days: int | None) -> RetentionPolicy:
    """The defaults, but e.g. raw_process=1, rollup_1m_process=10 (None: forever)."""
    groups: dict[str, dict[str, int | None]] = {}
    for key, value in days.items():
        group, klass = key.rsplit("_", 1)
        groups.setdefault(group, {})[klass] = value
    return RetentionPolicy.from_settings(RetentionSettings.model_validate(groups))


def store(db: Database, *samples: Sample) -> None:
    with db.transaction() as tx:
        tx.insert_samples(samples)


def temp(at: datetime, value: int = 20, machine: str = "M1") -> Sample:
    return Sample(machine, TEMP, at, Decimal(value))


def times(db: Database, machine: str = "M1", metric: str = TEMP) -> list[datetime]:
    with db.transaction(write=False) as tx:
        return [s.timestamp for s in tx.samples(machine, metric)]


def buckets(db: Database, resolution: str, machine: str = "M1") -> list[datetime]:
    return [r.bucket for r in all_rollups(db, resolution, machine)]


def all_rollups(db: Database, resolution: str, machine: str = "M1") -> list[Rollup]:
    return read_rollups(
        db,
        resolution,  # type: ignore[arg-type]
        machines=[machine],
        metrics=[TEMP],
        start=NOW - 1000 * DAY,
        end=NOW + DAY,
    )


def test_expired_process_samples_go_and_young_ones_stay(db: Database) -> None:
    cutoff = NOW - 90 * DAY  # raw process values: 90 days by default
    old = [temp(NOW - 100 * DAY), temp(NOW - 100 * DAY + timedelta(seconds=30), 21)]
    edge = [temp(cutoff - MS), temp(cutoff, 22)]
    young = [temp(NOW - 89 * DAY), temp(NOW - timedelta(hours=1))]
    text = Sample("M1", "Recipe", NOW - 100 * DAY, "P-100")
    store(db, *old, *edge, *young, text)
    refresh_all(db)
    minutes, hours = all_rollups(db, "1m"), all_rollups(db, "1h")

    deleted = purge_all(db, DEFAULTS, NOW)

    assert deleted == {"samples": 4, "rollup_1m": 0, "rollup_1h": 0}
    assert times(db) == [cutoff, NOW - 89 * DAY, NOW - timedelta(hours=1)]
    assert times(db, metric="Recipe") == []
    # Rollups are computed already and are kept for their own time: unchanged.
    assert (all_rollups(db, "1m"), all_rollups(db, "1h")) == (minutes, hours)
    assert minutes[0].count == 2
    assert purge_all(db, DEFAULTS, NOW) == NOTHING  # idempotent


def test_a_queued_minute_keeps_its_samples_and_rollups_until_rolled_up(db: Database) -> None:
    short = policy(raw_process=1, rollup_1m_process=2, rollup_1h_process=3)
    store(db, temp(NOW - 10 * DAY), temp(NOW - 9 * DAY), temp(NOW - 10 * DAY, machine="M2"))
    refresh_all(db)
    late = temp(NOW - 10 * DAY + timedelta(seconds=5), 25)
    store(db, late)  # its minute is queued again: raw and rollups of M1 must wait

    assert purge_all(db, short, NOW) == {"samples": 1, "rollup_1m": 1, "rollup_1h": 1}  # M2
    assert times(db) == [NOW - 10 * DAY, late.timestamp, NOW - 9 * DAY]
    assert len(buckets(db, "1m")) == 2
    assert len(buckets(db, "1h")) == 2
    assert buckets(db, "1m", "M2") == []

    refresh_all(db)
    (minute, _) = all_rollups(db, "1m")
    assert (minute.count, minute.total) == (2, Decimal(45))  # rolled up before it went
    assert purge_all(db, short, NOW) == {"samples": 3, "rollup_1m": 2, "rollup_1h": 2}
    assert (times(db), buckets(db, "1m"), buckets(db, "1h")) == ([], [], [])


def test_rollups_keep_their_own_retention(db: Database) -> None:
    store(db, *(temp(NOW - d * DAY) for d in (200, 50, 5)), temp(NOW - timedelta(hours=1)))
    # 1-minute rows go by whole hours: 07:30 ten days ago is in an hour before the cutoff.
    store(db, temp(NOW - 10 * DAY - timedelta(minutes=30)), temp(NOW - 10 * DAY + MS))
    refresh_all(db)
    assert len(buckets(db, "1m")) == 6

    kept = policy(raw_process=1, rollup_1m_process=10, rollup_1h_process=100)
    assert purge_all(db, kept, NOW) == {"samples": 5, "rollup_1m": 3, "rollup_1h": 1}

    assert times(db) == [NOW - timedelta(hours=1)]
    assert buckets(db, "1m") == [
        NOW - 10 * DAY,
        NOW - 5 * DAY,
        NOW - timedelta(hours=1),
    ]
    assert buckets(db, "1h") == [
        NOW - 50 * DAY,
        NOW - 10 * DAY - timedelta(hours=1),
        NOW - 10 * DAY,
        NOW - 5 * DAY,
        NOW - timedelta(hours=1),
    ]
    # Hourly rollups are kept forever by default.
    assert purge_all(db, DEFAULTS, NOW + 10_000 * DAY)["rollup_1h"] == 0
    assert len(buckets(db, "1h")) == 5


def test_one_minute_rows_live_as_long_as_their_raw_samples(db: Database) -> None:
    store(db, temp(NOW - 20 * DAY), temp(NOW - 40 * DAY))
    refresh_all(db)
    # Raw kept longer than 1-minute rows: a late sample at -20 d would make the rollup job
    # recompute its hour from the 1-minute rows, so they must stay as long as the samples.
    odd = policy(raw_process=30, rollup_1m_process=10)
    assert purge_all(db, odd, NOW) == {"samples": 1, "rollup_1m": 1, "rollup_1h": 0}
    assert buckets(db, "1m") == [NOW - 20 * DAY]
    store(db, temp(NOW - 20 * DAY + timedelta(minutes=1), 30))
    refresh_all(db)
    (hour,) = [r for r in all_rollups(db, "1h") if r.bucket == NOW - 20 * DAY]
    assert (hour.count, hour.total) == (2, Decimal(50))


def test_counters_a_work_order_may_still_count_are_kept(db: Database) -> None:
    t0 = NOW - 200 * DAY  # the order starts; retention runs at NOW, 200 days later
    clock = Clock(t0 - 100 * DAY)
    service = PlantService(db, clock=clock)
    service.load_master_data(PLANT)

    def good(at: datetime, value: int) -> Sample:
        return Sample("M3", GOOD_COUNT, at, Decimal(value))

    def feed(*samples: Sample) -> None:
        clock.now = max(clock.now, *(s.timestamp for s in samples))
        service.record_samples(samples)
        refresh_all(db)

    def state(at: datetime, code: MachineState) -> Sample:
        return Sample("M3", MACHINE_STATE, at, Decimal(int(code)))

    baseline = good(t0 - timedelta(hours=1), 500)
    feed(good(t0 - 100 * DAY, 100), good(t0 - 60 * DAY, 300), baseline)
    feed(Sample("M1", SCRAP_COUNT, t0 - 100 * DAY, Decimal(1)))
    feed(Sample("M1", SCRAP_COUNT, t0 - timedelta(hours=1), Decimal(10)))
    feed(state(t0 - 100 * DAY, MachineState.RUNNING), state(t0 - 60 * DAY, MachineState.DOWN))
    feed(temp(t0 - 100 * DAY, machine="M3"))
    clock.now = t0
    service.release_work_order("WO-1001")
    service.start_work_order("WO-1001")
    feed(*(good(t0 + timedelta(seconds=s), 500 + s) for s in range(10, 61, 10)))
    feed(Sample("M1", SCRAP_COUNT, t0 + timedelta(seconds=30), Decimal(11)))
    wo = service.work_order("WO-1001")
    assert (wo.good, wo.scrap) == (Decimal(60), Decimal(1))

    short = policy(raw_process=30, raw_counter=30, raw_state=30)
    assert purge_all(db, short, NOW)["samples"] == 5

    # The running order's window and the reading before it (its baseline) are kept; older
    # counter readings go. The state keeps the reading that says what held at the cutoff.
    assert times(db, "M3", GOOD_COUNT) == [
        baseline.timestamp,
        *(t0 + timedelta(seconds=s) for s in range(10, 61, 10)),
    ]
    assert times(db, "M1", SCRAP_COUNT) == [t0 - timedelta(hours=1), t0 + timedelta(seconds=30)]
    assert times(db, "M3", MACHINE_STATE) == [t0 - 60 * DAY]
    assert times(db, "M3", TEMP) == []

    # Posting stays exact: a late reading makes the whole window be counted again, from the
    # kept baseline (without it the count would start at 510 and lose 10 parts).
    feed(good(t0 + timedelta(seconds=35), 535))
    feed(good(t0 + timedelta(seconds=70), 570))
    assert service.work_order("WO-1001").good == 70
    clock.now = t0 + timedelta(seconds=80)
    service.complete_work_order("WO-1001")
    assert purge_all(db, short, NOW) == NOTHING  # completed: a late reading still corrects it
    held = CounterHold("WO-1001", WorkOrderStatus.COMPLETED, t0)
    assert purge_step(db, short, NOW).held == held  # the job warns about it in its log
    feed(Sample("M1", SCRAP_COUNT, t0 + timedelta(seconds=75), Decimal(12)))
    assert service.work_order("WO-1001").scrap == 2
    receipts = [m for m in service.ledger("FG-100") if m.reason == "receipt"]
    assert sum(m.quantity for m in receipts) == 70

    # No command closes an order yet; once closed, it holds nothing: the last reading stays
    # (the next order's baseline), with the rest of its minute.
    with db.transaction() as tx:
        tx.executor.execute("UPDATE work_orders SET status = 'closed'")
    assert purge_all(db, short, NOW)["samples"] == 7 + 2
    assert times(db, "M3", GOOD_COUNT) == [t0 + timedelta(seconds=s) for s in (60, 70)]
    assert times(db, "M1", SCRAP_COUNT) == [t0 + timedelta(seconds=75)]


def test_each_transaction_deletes_a_bounded_batch(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = NOW - 100 * DAY
    for machine in ("M1", "M2"):
        store(db, *(temp(old + timedelta(seconds=i), i, machine) for i in range(1500)))
    store(db, temp(NOW - DAY))
    refresh_all(db)

    first = purge_step(db, DEFAULTS, NOW, batch=1000)
    assert first.deleted["samples"] == 1000
    assert first.next == Cursor("samples", ("M1", TEMP), again=True)
    assert times(db)[0] == old + timedelta(seconds=1000)  # the oldest went first
    steps = [first]
    while (cursor := steps[-1].next) is not None:
        steps.append(purge_step(db, DEFAULTS, NOW, cursor, batch=1000))
    assert [s.deleted["samples"] for s in steps] == [1000, 1000, 1000, 0]
    assert times(db) == [NOW - DAY]
    assert times(db, "M2") == []
    assert purge_all(db, DEFAULTS, NOW, batch=1000) == NOTHING

    # Series looked at per transaction are bounded too.
    monkeypatch.setattr(retention, "MAX_SERIES_PER_STEP", 2)
    store(db, *(temp(old, machine=f"N{i}") for i in range(5)))
    refresh_all(db)
    step = purge_step(db, DEFAULTS, NOW)  # M1 (nothing expired), then N0
    assert (step.deleted["samples"], step.next) == (1, Cursor("samples", ("N0", TEMP)))
    assert purge_step(db, DEFAULTS, NOW, step.next).deleted["samples"] == 2  # N1, N2
    assert purge_all(db, DEFAULTS, NOW)["samples"] == 2


async def test_the_periodic_job_purges_each_interval_until_stopped(db: Database) -> None:
    worker = ServiceWorker()
    stop = asyncio.Event()
    registry = CollectorRegistry()
    metrics = RetentionMetrics(registry)
    store(db, temp(NOW - 100 * DAY), temp(NOW - DAY))
    refresh_all(db)
    job = retention_periodically(
        worker.run, db, DEFAULTS, 0.05, stop, clock=lambda: NOW, on_deleted=metrics.deleted
    )
    task = asyncio.create_task(job)
    try:
        await wait_for(lambda: times(db) == [NOW - DAY], what="the first run")
        store(db, temp(NOW - 95 * DAY, machine="M2"))
        refresh_all(db)
        await wait_for(lambda: times(db, "M2") == [], what="a later run")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        await worker.close()
    assert task.result() is None
    deleted = registry.get_sample_value("retention_deleted_rows_total", {"table": "samples"})
    assert deleted == 2


@pytest.mark.postgres
def test_one_worker_purges_at_a_time(postgres_dsn: str) -> None:
    with Database(postgres_dsn) as db:
        store(db, temp(NOW - 100 * DAY))
        refresh_all(db)
        with psycopg.connect(postgres_dsn, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (PURGE_LOCK,))
            step = purge_step(db, DEFAULTS, NOW)
            assert (step.busy, step.next, step.deleted["samples"]) == (True, None, 0)
            other.execute("SELECT pg_advisory_unlock(%s)", (PURGE_LOCK,))
        assert purge_all(db, DEFAULTS, NOW)["samples"] == 1
