"""Cloud ingest rate: Sparkplug DDATA from the broker to committed `samples` rows, both backends.

Issue 4 asks for samples/s from the broker to committed rows, against a raw bulk load of the
same rows in the same run (goal >= 0.5x), with 1 and 2 ingest workers, plus broker-to-commit
latency p50/p99. This starts, all private to the run:

* a mosquitto on a free loopback port (unlimited queue for the slow subscriber, so nothing is
  dropped while the cloud catches up);
* a fresh PostgreSQL database (on TAKTLINE_TEST_PG) or a SQLite file;
* `--workers` `taktline-cloud run` processes on it (TAKTLINE_MQTT_SHARED_GROUP when > 1, so the
  broker splits DDATA between them; births reach all);
* a publisher process: NBIRTH + DBIRTH for `--devices` devices of `--metrics` DOUBLE metrics,
  then `--messages` DDATA (QoS 1, by alias), round-robin over the devices.

Rate = samples / (first DDATA published -> `count(*)` of samples reaches the total). Latency of
one metric per message: its sample timestamp (= publish wall clock, ms) to the first poll (every
`--poll-ms`) that sees its row committed, so it includes up to one poll interval and, under this
flood, the time the message queued in the broker.

Also printed: batches committed and `batch_commit_seconds_sum` over the workers' GET /metrics
(when it equals the wall time, the store thread is the bottleneck).

Baseline, same run, same database: the same rows into `samples_raw`, a table of the same shape
(columns, unique key; not the rollup trigger): PostgreSQL `COPY`, SQLite `executemany` in one
transaction.

    uv run python bench/ingest_rate.py [--backend postgresql|sqlite] [--workers 1|2]
        [--messages 2000] [--metrics 100] [--devices 10] [--batch-size N] [--deadline 100]

Stops by itself (fails past `--deadline` seconds of ingest).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import psycopg

from taktline_cloud.storage.sql import sqlite_time, to_datetime
from taktline_contract.metrics import BD_SEQ, NODE_REBIRTH
from taktline_contract.sparkplug import DataType, Metric, Payload, encode_payload

ROOT = Path(__file__).resolve().parent.parent
GROUP = "PLANT-1"
NODE = "BENCH-GW"
ADMIN_DSN = os.environ.get("TAKTLINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
READY = re.compile(r"Taktline cloud on http://[\d.]+:(\d+)")
PROBE_METRIC = "bench/m000"


def metric_name(index: int) -> str:
    """The name of metric `index` (alias index + 1)."""
    return f"bench/m{index:03d}"


def value_of(message: int, index: int) -> float:
    """The value metric `index` carries in DDATA number `message` (exact in binary and decimal)."""
    return (message * 1000 + index) / 4


def device_of(message: int, devices: int) -> str:
    """The device DDATA number `message` is published for."""
    return f"BM{message % devices:02d}"


# ---------------------------------------------------------------- publisher (child process)


async def publish(port: int, devices: int, metrics: int, messages: int) -> list[str]:
    """Birth, then flood DDATA; return each message's "device ts_ms"."""
    quiet = logging.getLogger("bench.publisher")
    quiet.setLevel(logging.ERROR)  # aiomqtt warns about every publish beyond 10 in flight
    client = aiomqtt.Client(
        "127.0.0.1", port, identifier=f"bench-pub-{uuid.uuid4().hex[:6]}", logger=quiet
    )
    async with client as c:
        seq = 0

        async def send(kind: str, device: str | None, ms: int, body: list[Metric]) -> None:
            nonlocal seq
            tail = f"/{device}" if device else ""
            raw = encode_payload(Payload.of(datetime.fromtimestamp(ms / 1000, UTC), body, seq))
            seq = (seq + 1) % 256
            await c.publish(f"spBv1.0/{GROUP}/{kind}/{NODE}{tail}", raw, qos=1, timeout=30)

        now = int(time.time() * 1000)
        await send("NBIRTH", None, now, [
            Metric(BD_SEQ, DataType.UINT64, 0),
            Metric(NODE_REBIRTH, DataType.BOOLEAN, False, alias=0),
        ])  # fmt: skip
        for d in range(devices):
            births = [
                Metric(metric_name(i), DataType.DOUBLE, 0.0, alias=i + 1) for i in range(metrics)
            ]
            await send("DBIRTH", f"BM{d:02d}", now, births)
        print("BORN", flush=True)  # the parent waits for it
        sys.stdin.readline()  # the parent says go once the workers hold the births
        last = dict.fromkeys(range(devices), now)
        lines: list[str] = []
        window: set[asyncio.Task[None]] = set()
        for m in range(messages):
            d = m % devices
            ms = max(int(time.time() * 1000), last[d] + 1)  # unique (machine, metric, ts)
            last[d] = ms
            body = [
                Metric(None, DataType.DOUBLE, value_of(m, i), alias=i + 1) for i in range(metrics)
            ]
            lines.append(f"{device_of(m, devices)} {ms}")
            window.add(asyncio.create_task(send("DDATA", device_of(m, devices), ms, body)))
            if len(window) >= 50:
                _, window = await asyncio.wait(window, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*window)
    return lines


# ---------------------------------------------------------------- infrastructure


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mosquitto(workdir: Path) -> Iterator[int]:
    """A private mosquitto; yields its port."""
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"log_dest file {workdir}/mosquitto.log\nmax_queued_messages 0\nmax_inflight_messages 0\n"
        + ("user root\n" if os.geteuid() == 0 else ""),
        encoding="utf-8",
    )
    process = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("mosquitto did not start")
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    """A fresh database URL (PostgreSQL: dropped afterwards)."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    name = f"taktline_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Db:
    """The bench's own connection (counting, probing, baseline)."""

    def __init__(self, url: str) -> None:
        self.backend = "sqlite" if url.startswith("sqlite") else "postgresql"
        self.conn: Any
        if self.backend == "sqlite":
            self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            self.conn.execute("PRAGMA busy_timeout = 10000")
        else:
            self.conn = psycopg.connect(url, autocommit=True)

    def scalar(self, sql: str) -> Any:
        """The first column of the first row."""
        return self.conn.execute(sql).fetchone()[0]

    def probe(self) -> list[tuple[str, int]]:
        """(machine, ts in ms) of every committed row of the probe metric."""
        rows = self.conn.execute(
            f"SELECT machine, ts FROM samples WHERE metric = '{PROBE_METRIC}'"
        ).fetchall()
        return [(str(m), round(to_datetime(ts).timestamp() * 1000)) for m, ts in rows]

    def baseline(self, rows: list[tuple[str, str, datetime, Decimal]]) -> float:
        """Seconds to load `rows` into a fresh same-shaped table, committed."""
        if self.backend == "sqlite":
            ddl = self.scalar("SELECT sql FROM sqlite_master WHERE name = 'samples'")
            self.conn.execute(
                ddl.replace("samples", "samples_raw", 1).replace("samples_key", "samples_raw_key")
            )
            params = [(m, k, sqlite_time(t), str(v), None, None, False) for m, k, t, v in rows]
            start = time.perf_counter()
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT INTO samples_raw VALUES (?, ?, ?, ?, ?, ?, ?)", params)
            self.conn.execute("COMMIT")
            return time.perf_counter() - start
        self.conn.execute("CREATE TABLE samples_raw (LIKE samples INCLUDING ALL)")
        start = time.perf_counter()
        with self.conn.transaction(), self.conn.cursor() as cur:
            copy_sql = "COPY samples_raw (machine, metric, ts, value_num, is_historical) FROM STDIN"
            with cur.copy(copy_sql) as copy:
                for m, k, t, v in rows:
                    copy.write_row((m, k, t, v, False))
        return time.perf_counter() - start


def start_worker(env: dict[str, str], index: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`taktline-cloud run` (worker `index`); returns it once its HTTP port is logged."""
    worker_env = dict(env, TAKTLINE_MQTT_CLIENT_ID=f"bench-ingest-{index}")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "taktline_cloud.cli", "run"],
            env=worker_env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = READY.findall(log.read_text(errors="replace"))
        if len(found) > index:
            return process, int(found[index])
        if process.poll() is not None:
            raise RuntimeError(f"worker exited: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError("worker did not start")


def commit_time(ports: list[int]) -> tuple[float, float]:
    """(seconds, count) of `batch_commit_seconds` summed over the workers' GET /metrics."""
    seconds = count = 0.0
    for port in ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for name, value in re.findall(r"^batch_commit_seconds_(sum|count) (\S+)$", text, re.M):
            if name == "sum":
                seconds += float(value)
            else:
                count += float(value)
    return seconds, count


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run(args: argparse.Namespace) -> None:
    """One measurement; prints the table."""
    total = args.messages * args.metrics
    with (
        tempfile.TemporaryDirectory(prefix="taktline-ingest-") as tmp,
        mosquitto(Path(tmp)) as port,
        database(args.backend, Path(tmp)) as url,
    ):
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAKTLINE_")}
        env.update(
            TAKTLINE_DATABASE_URL=url,
            TAKTLINE_PLANT_FILE=str(ROOT / "config" / "plant.yaml"),
            TAKTLINE_MQTT_PORT=str(port),
            TAKTLINE_HTTP_PORT="0",
            TAKTLINE_DASHBOARD_DIR=str(work / "no-dashboards"),
        )
        if args.workers > 1:
            env["TAKTLINE_MQTT_SHARED_GROUP"] = "bench"
        if args.batch_size is not None:
            env["TAKTLINE_BATCH_SIZE"] = str(args.batch_size)
        log = work / "cloud.log"
        env["TAKTLINE_LOG_LEVEL"] = "INFO"  # the ready line is logged at INFO
        workers: list[subprocess.Popen[bytes]] = []
        ports: list[int] = []
        try:
            for i in range(args.workers):  # one after the other: the first one migrates
                process, http_port = start_worker(env, i, log)
                workers.append(process)
                ports.append(http_port)
            db = Db(url)
            stamps = work / "stamps.txt"
            publisher = subprocess.Popen(
                [sys.executable, __file__, "--publish", str(port), str(args.devices),
                 str(args.metrics), str(args.messages), str(stamps)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert publisher.stdin is not None
            assert publisher.stdout is not None
            if publisher.stdout.readline().strip() != "BORN":
                raise RuntimeError("publisher failed")
            born = args.devices * args.metrics  # DBIRTH values are samples too
            birth_deadline = time.monotonic() + 30
            while (base := int(db.scalar("SELECT count(*) FROM samples"))) < born:
                if time.monotonic() > birth_deadline:
                    raise RuntimeError(f"births not stored: {base} of {born} samples")
                time.sleep(0.05)
            start = time.perf_counter()
            publisher.stdin.write("go\n")
            publisher.stdin.flush()
            seen: dict[tuple[str, int], float] = {}
            count = 0
            deadline = start + args.deadline
            while count < total:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"only {count} of {total} samples after {args.deadline} s")
                time.sleep(args.poll_ms / 1000)
                observed = time.time()
                for key in db.probe():
                    seen.setdefault(key, observed)
                count = int(db.scalar("SELECT count(*) FROM samples")) - base
            elapsed = time.perf_counter() - start
            observed = time.time()
            for key in db.probe():  # rows committed between the last probe and the count
                seen.setdefault(key, observed)
            publisher.wait(30)
            sent = [line.split() for line in stamps.read_text(encoding="utf-8").splitlines()]
            lat = [seen[(dev, int(ms))] - int(ms) / 1000 for dev, ms in sent]
            rows = [
                (dev, metric_name(i), datetime.fromtimestamp(int(ms) / 1000, UTC),
                 Decimal(str(value_of(m, i))))
                for m, (dev, ms) in enumerate(sent)
                for i in range(args.metrics)
            ]  # fmt: skip
            raw_s = db.baseline(rows)
            commit_s, batches = commit_time(ports)
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(30)
    rate, raw_rate = total / elapsed, total / raw_s
    print(
        f"ingest_rate {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, backend={args.backend} workers={args.workers} "
        f"messages={args.messages} x metrics={args.metrics} devices={args.devices} "
        f"batch_size={args.batch_size or 'default'}\n"
        f"| figure | value |\n|---|---:|\n"
        f"| samples committed | {total} |\n"
        f"| ingest wall time (s) | {elapsed:.2f} |\n"
        f"| **ingest samples/s** | **{rate:,.0f}** |\n"
        f"| baseline {'COPY' if args.backend == 'postgresql' else 'executemany'} (s) "
        f"| {raw_s:.2f} |\n"
        f"| baseline samples/s | {raw_rate:,.0f} |\n"
        f"| **ratio ingest / baseline** | **{rate / raw_rate:.2f}** |\n"
        f"| latency p50 (ms, {len(lat)} messages) | {statistics.median(lat) * 1000:.0f} |\n"
        f"| latency p99 (ms) | {percentile(lat, 0.99) * 1000:.0f} |\n"
        f"| batches committed (all workers) | {batches:.0f} |\n"
        f"| batch commit time, sum over workers (s) | {commit_s:.2f} |"
    )


def main() -> None:
    """Parse arguments; either the publisher child or the whole bench."""
    if len(sys.argv) > 1 and sys.argv[1] == "--publish":
        port, devices, metrics, messages = (int(a) for a in sys.argv[2:6])
        lines = asyncio.run(publish(port, devices, metrics, messages))
        Path(sys.argv[6]).write_text("\n".join(lines) + "\n", encoding="utf-8")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--metrics", type=int, default=100)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument(
        "--batch-size", type=int, help="TAKTLINE_BATCH_SIZE (default: the cloud's, 5000)"
    )
    parser.add_argument("--poll-ms", type=int, default=20)
    parser.add_argument("--deadline", type=float, default=100)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
