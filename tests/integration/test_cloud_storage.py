"""The storage layer on both backends: migrations, the sample key, exact decimals, constraints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from taktline_cloud.errors import StorageError
from taktline_cloud.historian.samples import Sample
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database
from taktline_cloud.storage.migrations import MIGRATIONS
from taktline_contract.metrics import GOOD_COUNT, SCRAP_COUNT, TEMPERATURE

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def test_open_migrates_once_and_reopens(database_url: str) -> None:
    latest = MIGRATIONS[-1].version
    with Database(database_url) as first:
        assert first.schema_version == latest
        assert first.hypertable is False  # plain PostgreSQL here; TimescaleDB only when present
    with Database(database_url) as again, again.transaction(write=False) as tx:
        rows = tx.executor.query("SELECT version FROM schema_version ORDER BY version")
        assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]


def test_an_older_schema_is_brought_up_to_date(database_url: str) -> None:
    with Database(database_url) as db, db.transaction() as tx:
        # Back to version 1, as a database made by the previous release would be.
        tx.executor.execute("DROP TABLE counter_checkpoints")
        tx.executor.execute("DELETE FROM schema_version WHERE version > 1")
    with Database(database_url) as db, db.transaction(write=False) as tx:
        assert db.schema_version == MIGRATIONS[-1].version
        assert tx.executor.query("SELECT COUNT(*) FROM counter_checkpoints") == [(0,)]


def test_a_newer_schema_is_refused(database_url: str) -> None:
    with Database(database_url) as db, db.transaction() as tx:
        tx.executor.execute(
            "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
            (99, "from the future", T0),
        )
    with pytest.raises(StorageError, match="version 99 is newer"):
        Database(database_url)


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite:///", "file.db"])
def test_bad_url_is_a_storage_error(url: str) -> None:
    with pytest.raises(StorageError):
        Database(url)


def test_sample_key_conflict_is_a_no_op_and_values_are_exact(db: Database) -> None:
    big = Decimal("12345678901234567890.123456789")
    samples = [
        Sample("M1", GOOD_COUNT, T0, Decimal(4294967295)),
        Sample("M1", TEMPERATURE, T0, big),
        Sample("M1", TEMPERATURE, T0 + timedelta(milliseconds=1), Decimal("0.1")),
        Sample("M1", "Flag", T0, True),
        Sample("M1", "Text", T0, "hello"),
        Sample("M1", "Null", T0, None, is_historical=True),
    ]
    with db.transaction() as tx:
        assert tx.insert_samples(samples) == len(samples)
    with db.transaction() as tx:
        assert tx.insert_samples(samples) == 0
        changed = Sample("M1", GOOD_COUNT, T0, Decimal(7))  # same key, other value: first wins
        assert tx.insert_samples([changed, Sample("M1", GOOD_COUNT, T0, Decimal(8))]) == 0
    with db.transaction(write=False) as tx:
        assert tx.samples("M1", GOOD_COUNT) == [samples[0]]
        assert [s.value for s in tx.samples("M1", TEMPERATURE)] == [big, Decimal("0.1")]
        assert tx.samples("M1", "Flag")[0].value is True
        assert tx.samples("M1", "Text")[0].value == "hello"
        assert tx.samples("M1", "Null")[0] == samples[5]


def test_large_batch_with_duplicates_inside(db: Database) -> None:
    # Big enough for the COPY path on PostgreSQL; 200 rows repeat keys within the batch.
    rows = [Sample("M3", GOOD_COUNT, T0 + timedelta(seconds=i), Decimal(i)) for i in range(1000)]
    batch = rows + rows[:200]
    with db.transaction() as tx:
        assert tx.insert_samples(batch) == 1000
    with db.transaction() as tx:
        assert tx.insert_samples(batch) == 0
        assert len(tx.samples("M3", GOOD_COUNT)) == 1000


def test_a_large_batch_overlapping_stored_rows_stores_only_the_new_ones(db: Database) -> None:
    # PostgreSQL COPYs a large batch straight in and, when a key is already stored, rolls
    # that back to a savepoint and skips the known keys: the transaction goes on either way.
    stored = [Sample("M4", GOOD_COUNT, T0 + timedelta(seconds=i), Decimal(i)) for i in range(600)]
    with db.transaction() as tx:
        assert tx.insert_samples(stored) == 600
    later = [
        Sample("M4", GOOD_COUNT, T0 + timedelta(seconds=i), Decimal(i)) for i in range(300, 1200)
    ]
    with db.transaction() as tx:
        assert tx.insert_samples(later) == 600
        assert tx.insert_samples([Sample("M4", SCRAP_COUNT, T0, Decimal(7))]) == 1
    with db.transaction(write=False) as tx:
        values = [s.value for s in tx.samples("M4", GOOD_COUNT)]
        assert values == [Decimal(i) for i in range(1200)]
        assert [s.value for s in tx.samples("M4", SCRAP_COUNT)] == [Decimal(7)]


def test_a_failed_transaction_leaves_nothing(db: Database) -> None:
    sample = Sample("M1", GOOD_COUNT, T0, Decimal(1))

    def fail_midway() -> None:
        with db.transaction() as tx:
            tx.insert_samples([sample])
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_midway()
    with db.transaction(write=False) as tx:
        assert tx.samples("M1", GOOD_COUNT) == []


def _insert_wo(db: Database, number: str, status: str, quantity: str = "10") -> None:
    with db.transaction() as tx:
        tx.executor.execute(
            "INSERT INTO work_orders (number, item, line, quantity, status, created_at, good,"
            " scrap) VALUES (?, 'FG-100', 'LINE-1', ?, ?, ?, ?, ?)",
            (number, Decimal(quantity), status, T0, Decimal(0), Decimal(0)),
        )


def test_invariants_are_named_constraints(db: Database) -> None:
    PlantService(db, clock=lambda: T0).load_master_data(PLANT)
    with pytest.raises(StorageError, match="stock_moves_quantity_positive"), db.transaction() as tx:
        tx.executor.execute(
            "INSERT INTO stock_moves (at, item, from_location, to_location, quantity, reason,"
            " reference) VALUES (?, 'FG-100', 'WH1/FG', 'VIRTUAL/CUSTOMER', ?, 'x', 'y')",
            (T0, Decimal(0)),
        )
    with pytest.raises(StorageError, match="work_orders_status_valid"):
        _insert_wo(db, "WO-X", "finished")
    with pytest.raises(StorageError, match="work_orders_quantity_positive"):
        _insert_wo(db, "WO-X", "created", quantity="-1")
    with pytest.raises(StorageError, match=r"work_orders_number_unique|work_orders\.number"):
        _insert_wo(db, "WO-1001", "created")  # the plant file created WO-1001
    _insert_wo(db, "WO-R1", "running")
    with pytest.raises(StorageError, match=r"work_orders_one_running_per_line|work_orders\.line"):
        _insert_wo(db, "WO-R2", "running")
    row = ("M1", GOOD_COUNT, T0, Decimal(1), False)
    sql = (
        "INSERT INTO samples (machine, metric, ts, value_num, is_historical) VALUES (?, ?, ?, ?, ?)"
    )
    with db.transaction() as tx:
        tx.executor.execute(sql, row)
    with pytest.raises(StorageError, match=r"samples_key|samples\.machine"), db.transaction() as tx:
        tx.executor.execute(sql, row)


@pytest.mark.postgres
def test_postgres_connection_is_never_left_idle_in_transaction(postgres_dsn: str) -> None:
    with Database(postgres_dsn) as db:
        service = PlantService(db, clock=lambda: T0)
        service.load_master_data(PLANT)
        service.dashboard()
        service.work_orders()
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            states = admin.execute(
                "SELECT state FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            ).fetchall()
        assert states
        assert all(state == "idle" for (state,) in states), states


@pytest.mark.postgres
def test_postgres_reconnects_after_the_connection_is_lost(postgres_dsn: str) -> None:
    with Database(postgres_dsn) as db:
        service = PlantService(db, clock=lambda: T0)
        service.load_master_data(PLANT)
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(StorageError):
            service.work_orders()  # the unit of work that met the dead connection fails …
        assert [wo.number for wo in service.work_orders()] == ["WO-1001"]  # … the next reconnects
