"""Trend query: a year of 1-minute rollups (525 600 buckets) of one machine metric, both backends.

Issue 4 asks the trend API to answer a year of 1-minute rollups for a machine in well under a
second. This fills `rollup_1m` with one bucket per minute of a year for one (machine, metric)
plus a second machine's year as noise, then times, median of `--runs`:

* the full HTTP path: GET /api/trends?bucket=1m over the year (FastAPI + orjson, in-process
  through the test client, body read);
* the read alone: `rollups.trend_json` (the database builds the JSON columns);
* baseline, same run: a bare `SELECT` of the same rows through the same connection, fetched
  and thrown away (what no Python code on top could beat);
* the 1-hour answer of the same year (8 760 buckets), for comparison.

    uv run python bench/trend_query.py [--backend sqlite|postgresql] [--runs 5] [--days 365]

PostgreSQL uses a fresh database made on TAKTLINE_TEST_PG (default the local test server) and
drops it at the end. Stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taktline_cloud.api import ApiContext, install_api
from taktline_cloud.historian import rollups
from taktline_cloud.live import LiveHub, ServiceGateway, ServiceWorker
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database

ADMIN_DSN = os.environ.get("TAKTLINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
START = datetime(2025, 11, 24, tzinfo=UTC)
BATCH = 20_000


@contextlib.contextmanager
def database_url(backend: str) -> Iterator[str]:
    """A fresh, empty database of the backend; removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'bench.db'}"
        return
    name = f"taktline_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(db: Database, machine: str, minutes: int) -> None:
    """One 1-minute bucket per minute: 60 samples of a slowly varying temperature."""
    for first in range(0, minutes, BATCH):
        rows = []
        for i in range(first, min(first + BATCH, minutes)):
            at = START + timedelta(minutes=i)
            base = Decimal(600 + i % 400) / 10
            rows.append(
                (machine, "Temperature", at, base - 1, base + 1, base * 60, base, base, at, 60)
            )
        with db.transaction() as tx:
            tx.executor.executemany(
                "INSERT INTO rollup_1m (machine, metric, bucket, value_min, value_max, value_sum,"
                " value_avg, value_last, last_ts, sample_count)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )


def median_s(runs: int, call: Callable[[], object]) -> float:
    """Median wall time of `runs` calls, in seconds."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()
    minutes = args.days * 24 * 60
    end = START + timedelta(minutes=minutes)
    print(
        f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
        f" {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.backend}, {minutes} buckets"
    )
    with database_url(args.backend) as url, Database(url) as db:
        began = time.perf_counter()
        fill(db, "M1", minutes)
        fill(db, "M2", minutes)
        if db.backend == "postgresql":
            with db.transaction() as tx:
                tx.executor.execute("ANALYZE rollup_1m")
        print(f"filled {2 * minutes} rows in {time.perf_counter() - began:.1f} s")
        # The hours from the minutes with the job's own combine (the job itself recomputes
        # minutes from raw samples, which this bench does not store).
        with db.transaction() as tx:
            hours = [
                rollups.combine(
                    "M1",
                    "Temperature",
                    START + timedelta(hours=h),
                    [
                        rollups.Rollup(
                            "M1",
                            "Temperature",
                            START + timedelta(hours=h),
                            Decimal(59),
                            Decimal(101),
                            Decimal(4800),
                            Decimal(80),
                            START + timedelta(hours=h, minutes=59),
                            60,
                        )
                    ],
                )
                for h in range(minutes // 60)
            ]
            tx.executor.executemany(
                "INSERT INTO rollup_1h (machine, metric, bucket, value_min, value_max, value_sum,"
                " value_avg, value_last, last_ts, sample_count)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [r.row() for r in hours if r is not None],
            )
        worker = ServiceWorker()
        app = FastAPI()
        install_api(app)
        app.state.taktline = ApiContext(
            ServiceGateway(PlantService(db), worker, LiveHub(8)), LiveHub(8)
        )
        app.state.historian = db
        params = {
            "machines": "M1",
            "metrics": "Temperature",
            "from": START.isoformat(),
            "to": end.isoformat(),
        }

        def baseline() -> None:
            with db.transaction(write=False) as tx:
                tx.executor.query(
                    "SELECT bucket, value_min, value_max, value_sum, value_last, sample_count"
                    " FROM rollup_1m WHERE machine = ? AND metric = ? AND bucket >= ?"
                    " AND bucket < ? ORDER BY bucket",
                    ("M1", "Temperature", START, end),
                )

        def read() -> None:
            rollups.trend_json(db, "1m", machine="M1", metric="Temperature", start=START, end=end)

        with TestClient(app) as client:
            answer = client.get("/api/trends", params={**params, "bucket": "1m"})
            answer.raise_for_status()
            counted = len(answer.json()["series"][0]["t"])
            size = len(answer.content)
            http = median_s(
                args.runs, lambda: client.get("/api/trends", params={**params, "bucket": "1m"})
            )
            hourly = median_s(
                args.runs, lambda: client.get("/api/trends", params={**params, "bucket": "1h"})
            )
        worker._executor.shutdown()
        read_s, base_s = median_s(args.runs, read), median_s(args.runs, baseline)
    print(f"answer: {counted} buckets, {size / 1e6:.1f} MB of JSON")
    print(f"GET /api/trends bucket=1m, a year:  {http * 1000:.0f} ms (median of {args.runs})")
    print(f"trend_json (read, JSON by the DB):  {read_s * 1000:.0f} ms")
    print(f"baseline bare SELECT + fetchall:    {base_s * 1000:.0f} ms")
    print(f"GET /api/trends bucket=1h, a year:  {hourly * 1000:.0f} ms")


if __name__ == "__main__":
    main()
