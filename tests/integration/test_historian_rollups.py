"""Rollups on both backends: exact buckets across edges, late samples, idempotence, trend API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taktline_cloud.api import ApiContext, install_api, trends
from taktline_cloud.api.trends import TrendPublic
from taktline_cloud.historian.rollups import (
    Rollup,
    read_rollups,
    refresh_all,
    refresh_rollups,
    rollup_periodically,
)
from taktline_cloud.historian.samples import Sample
from taktline_cloud.live import LiveHub, ServiceGateway, ServiceWorker
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database
from taktline_contract.metrics import MACHINE_STATE, MachineState
from tests.support import wait_for

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
TEMP = "Temperature"
MS = timedelta(milliseconds=1)


def store(db: Database, *samples: Sample) -> None:
    with db.transaction() as tx:
        tx.insert_samples(samples)


def rollups(db: Database, resolution: Any, machine: str = "M1") -> list[Rollup]:
    return read_rollups(
        db,
        resolution,
        machines=[machine],
        metrics=[TEMP],
        start=T0 - timedelta(days=1),
        end=T0 + timedelta(days=1),
    )


def edge_samples() -> list[Sample]:
    """Samples on both sides of minute and hour edges, plus non-numeric ones that are ignored."""
    d = Decimal
    return [
        Sample("M1", TEMP, T0, d("10.1")),
        Sample("M1", TEMP, T0 + timedelta(seconds=30), d("20.25")),
        Sample("M1", TEMP, T0 + timedelta(minutes=1) - MS, d("-3")),
        Sample("M1", TEMP, T0 + timedelta(minutes=1), d("7")),
        Sample("M1", TEMP, T0 + timedelta(hours=1) - MS, d("1")),
        Sample("M1", TEMP, T0 + timedelta(hours=1), d("100")),
        Sample("M2", TEMP, T0 + timedelta(seconds=5), d("0.3")),
        Sample("M1", "Flag", T0, True),
        Sample("M1", "Text", T0, "hello"),
    ]


def test_buckets_are_exact_across_minute_and_hour_edges(db: Database) -> None:
    store(db, *edge_samples())
    assert refresh_all(db) == 5  # minutes 08:00, 08:01, 08:59, 09:00 of M1 and 08:00 of M2

    minutes = {r.bucket: r for r in rollups(db, "1m")}
    assert sorted(minutes) == [
        T0,
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=59),
        T0 + timedelta(hours=1),
    ]
    first = minutes[T0]
    assert (first.minimum, first.maximum, first.count) == (Decimal("-3"), Decimal("20.25"), 3)
    assert first.total == Decimal("27.35")
    assert first.average == Decimal("27.35") / 3
    assert (first.last, first.last_ts) == (Decimal("-3"), T0 + timedelta(minutes=1) - MS)
    assert minutes[T0 + timedelta(minutes=1)].count == 1

    hours = {r.bucket: r for r in rollups(db, "1h")}
    assert sorted(hours) == [T0, T0 + timedelta(hours=1)]
    eight = hours[T0]
    assert eight.count == 5
    assert (eight.minimum, eight.maximum) == (Decimal("-3"), Decimal("20.25"))
    assert eight.total == Decimal("35.35")
    assert eight.average == Decimal("7.07")
    assert (eight.last, eight.last_ts) == (Decimal("1"), T0 + timedelta(hours=1) - MS)
    nine = hours[T0 + timedelta(hours=1)]
    assert (nine.count, nine.last, nine.average) == (1, Decimal("100"), Decimal("100"))
    assert [r.count for r in rollups(db, "1h", "M2")] == [1]
    with db.transaction(write=False) as tx:
        assert tx.executor.query("SELECT COUNT(*) FROM rollup_pending") == [(0,)]


def test_a_late_sample_reaggregates_its_bucket_exactly_once(db: Database) -> None:
    store(db, *edge_samples())
    refresh_all(db)
    late = Sample("M1", TEMP, T0 + timedelta(seconds=10), Decimal("-50"), is_historical=True)
    store(db, late)
    store(db, late)  # redelivered: the sample key makes it a no-op
    result = refresh_rollups(db)
    assert (result.minutes, result.hours, result.more) == (1, 1, False)
    refresh_all(db)  # nothing queued: nothing changes

    first = next(r for r in rollups(db, "1m") if r.bucket == T0)
    assert (first.count, first.minimum, first.total) == (4, Decimal("-50"), Decimal("-22.65"))
    # Older than the bucket's newest sample: `last` stays the newest.
    assert first.last == Decimal("-3")
    eight = next(r for r in rollups(db, "1h") if r.bucket == T0)
    assert (eight.count, eight.minimum, eight.total) == (6, Decimal("-50"), Decimal("-14.65"))


def test_the_job_is_idempotent(db: Database) -> None:
    store(db, *edge_samples())
    refresh_all(db)
    before = (rollups(db, "1m"), rollups(db, "1h"))
    refresh_all(db)
    # Queue every bucket again, as a crash between runs or a replay would: same rows.
    with db.transaction() as tx:
        tx.executor.execute(
            "INSERT INTO rollup_pending (machine, metric, bucket)"
            " SELECT machine, metric, bucket FROM rollup_1m"
        )
    assert refresh_all(db) == 5
    assert (rollups(db, "1m"), rollups(db, "1h")) == before


def test_small_batches_give_the_same_rows(db: Database) -> None:
    store(db, *edge_samples())
    first = refresh_rollups(db, batch=2)
    assert (first.minutes, first.more) == (2, True)
    refresh_all(db, batch=2)
    hours = {r.bucket: r.count for r in rollups(db, "1h")}
    assert hours == {T0: 5, T0 + timedelta(hours=1): 1}


def test_samples_stored_before_the_rollup_migration_are_rolled_up(database_url: str) -> None:
    with Database(database_url) as db:
        store(db, *edge_samples())
        with db.transaction() as tx:
            x = tx.executor
            for table in ("rollup_watermark", "rollup_pending", "rollup_1h", "rollup_1m"):
                x.execute(f"DROP TABLE {table}")
            if db.backend == "postgresql":
                x.execute("DROP TRIGGER samples_rollup_queue ON samples")
                x.execute("DROP FUNCTION rollup_queue_rows()")
            else:
                x.execute("DROP TRIGGER samples_rollup_queue")
            x.execute("DELETE FROM schema_version WHERE version >= 4")  # 5 and later re-apply too
    with Database(database_url) as db:
        assert refresh_all(db) == 5
        assert [r.count for r in rollups(db, "1h")] == [5, 1]


@pytest.fixture
def client(db: Database) -> Iterator[TestClient]:
    worker = ServiceWorker()
    app = FastAPI()
    install_api(app)
    app.state.taktline = ApiContext(
        ServiceGateway(PlantService(db), worker, LiveHub(8)), LiveHub(8)
    )
    app.state.historian = db
    with TestClient(app) as test_client:
        yield test_client
    # The worker thread is idle once the client has its answers.
    worker._executor.shutdown()


def trend(client: TestClient, **params: str) -> Any:
    base = {
        "machines": "M1,M2",
        "metrics": TEMP,
        "from": "2026-11-24T08:00:00Z",
        "to": "2026-11-24T10:00:00Z",
    }
    return client.get("/api/trends", params={**base, **params})


def test_trend_api_answers_rollups_and_raw(db: Database, client: TestClient) -> None:
    later, earlier = edge_samples()[3:], edge_samples()[:3]
    store(db, *later)  # stored (and rolled up) out of time order: the answer is still sorted
    refresh_all(db)
    store(db, *earlier)
    refresh_all(db)

    hourly = trend(client, bucket="1h")
    assert hourly.status_code == 200, hourly.text
    body = hourly.json()
    m1 = next(s for s in body["series"] if s["machine"] == "M1")
    assert m1["t"] == ["2026-11-24T08:00:00Z", "2026-11-24T09:00:00Z"]
    assert m1["count"] == [5, 1]
    assert m1["min"] == ["-3", "100"]
    assert Decimal(m1["avg"][0]) == Decimal("7.07")
    assert m1["last"] == ["1", "100"]

    minutes = trend(client, bucket="1m", machines="M1,M9", to="2026-11-24T08:02:00Z").json()
    assert minutes["from"] == "2026-11-24T08:00:00.000Z"
    m1, m9 = minutes["series"]
    assert (m1["t"], m1["count"]) == (["2026-11-24T08:00:00Z", "2026-11-24T08:01:00Z"], [3, 1])
    assert Decimal(m1["avg"][0]) == Decimal("27.35") / 3
    assert (m1["min"][0], m1["max"][0], m1["last"][0]) == ("-3", "20.25", "-3")
    assert m9 == {
        "machine": "M9",
        "metric": TEMP,
        "t": [],
        "min": [],
        "max": [],
        "avg": [],
        "last": [],
        "count": [],
    }

    raw = trend(client, bucket="raw", machines="M2").json()
    assert raw["series"] == [
        {"machine": "M2", "metric": TEMP, "t": ["2026-11-24T08:00:05.000Z"], "value": ["0.3"]}
    ]

    # Every answer is what the OpenAPI document says it is (the route writes JSON unparsed).
    for answer in (body, minutes, raw):
        TrendPublic.model_validate(answer)
    schema = client.get("/openapi.json").json()
    documented = schema["paths"]["/api/trends"]["get"]["responses"]["200"]["content"]
    assert documented["application/json"]["schema"] == {"$ref": "#/components/schemas/TrendPublic"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2026-11-24T08:00:00"}, "no time zone"),
        ({"to": "2026-11-24T07:00:00Z"}, "must be after"),
        ({"machines": " , "}, "at least one"),
        ({"bucket": "5m"}, "bucket"),
        ({"from": "yesterday"}, "from"),
    ],
)
def test_trend_api_refuses_bad_parameters(
    client: TestClient, params: dict[str, str], message: str
) -> None:
    answer = trend(client, **params)
    assert answer.status_code == 422
    assert message in answer.text


def test_trend_api_caps_raw_points(
    db: Database, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store(db, *edge_samples())
    monkeypatch.setattr(trends, "RAW_POINT_CAP", 7)
    assert trend(client, bucket="raw").status_code == 200  # 7 numeric samples of M1 and M2
    monkeypatch.setattr(trends, "RAW_POINT_CAP", 6)
    refused = trend(client, bucket="raw")
    assert refused.status_code == 422
    assert "use bucket=1m" in refused.json()["detail"]


async def test_the_periodic_job_rolls_up_new_samples_until_stopped(db: Database) -> None:
    worker = ServiceWorker()
    stop = asyncio.Event()
    task = asyncio.create_task(rollup_periodically(worker.run, db, 0.05, stop))
    try:
        store(db, *edge_samples())
        await wait_for(lambda: len(rollups(db, "1h")) == 2, what="hourly rollups")
        store(db, Sample("M1", TEMP, T0 + timedelta(hours=2), Decimal("5")))
        await wait_for(lambda: len(rollups(db, "1h")) == 3, what="the next hour")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        await worker.close()
    assert task.result() is None


def test_state_history_api(db: Database, client: TestClient) -> None:
    store(
        db,
        Sample("M1", MACHINE_STATE, T0 - timedelta(minutes=5), Decimal(int(MachineState.RUNNING))),
        Sample("M1", MACHINE_STATE, T0 + timedelta(minutes=10), Decimal(int(MachineState.DOWN))),
        Sample("M1", MACHINE_STATE, T0 + timedelta(minutes=12), Decimal(int(MachineState.RUNNING))),
    )
    answer = client.get(
        "/api/machines/M1/states",
        params={"from": "2026-11-24T08:00:00Z", "to": "2026-11-24T08:30:00Z"},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(i["state"], i["seconds"]) for i in body["intervals"]] == [
        ("running", 600.0),
        ("down", 120.0),
        ("running", 1080.0),
    ]
    assert body["seconds"] == {"running": 1680.0, "down": 120.0}
    assert body["entries"] == {"down": 1, "running": 1}
    naive = client.get(
        "/api/machines/M1/states",
        params={"from": "2026-11-24T08:00:00", "to": "2026-11-24T09:00:00Z"},
    )
    assert naive.status_code == 422


@pytest.mark.postgres
def test_a_sample_committing_during_the_job_is_not_lost(postgres_dsn: str) -> None:
    """Another ingest connection's sample, uncommitted while the job takes its minute."""
    with Database(postgres_dsn) as db:
        store(db, Sample("M1", TEMP, T0, Decimal(1)))
        with psycopg.connect(postgres_dsn) as ingest:
            ingest.execute(
                "INSERT INTO samples (machine, metric, ts, value_num, is_historical)"
                " VALUES ('M1', %s, %s, 2, false)",
                (TEMP, T0 + timedelta(seconds=30)),
            )
            done: list[int] = []
            job = threading.Thread(target=lambda: done.append(refresh_all(db)))
            job.start()
            try:
                job.join(timeout=1.0)
                # The queued minute is locked by the open ingest transaction: the job waits.
                assert not done
            finally:
                ingest.commit()
                job.join(timeout=30)
        refresh_all(db)
        (minute,) = rollups(db, "1m")
        assert (minute.count, minute.total) == (2, Decimal(3))
