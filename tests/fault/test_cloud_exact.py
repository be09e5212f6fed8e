"""After each fault the cloud's data is exact: every sample, every rollup, every booking.

The issue: "Broker restart, cloud kill -9 in the middle of a batch, database restart, a 10-minute
edge outage followed by replay, two ingest workers with one killed: afterwards every count and sum
in the database equals what the simulators produced, exactly." Each scenario runs the real chain
(simulated PLCs over Modbus TCP, the edge agent, Mosquitto, `taktline-cloud run` processes) on
SQLite and on PostgreSQL, and afterwards checks three things:

* samples: every sample a spy saw on the broker (subscribed before the edge's first birth, so it
  decodes every DDATA with the births' aliases) is in `samples` with its value, and the table
  holds nothing else for the plant's machines (its key makes a second copy impossible);
* rollups: once the rollup job has run, per (machine, metric) the 1-minute and 1-hour rollups
  count every numeric sample once and sum the values exactly (Decimal);
* books: work order good/scrap equal the PLCs' counter deltas, stock moves and ledger follow.

The books alone cannot see a lost sample: counts come from absolute PLC counters, so the next
reading hides a missing one. The sample and rollup checks can.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import pytest

from taktline_contract.sparkplug import to_millis
from taktline_edge.config import EdgeConfig
from taktline_edge.outbox import Outbox, Sample
from taktline_edge.tags import TagValue
from taktline_simulators.config import PlantSimConfig
from taktline_simulators.machine import LineModel
from taktline_simulators.registers import encode_status
from tests.plant_harness import (
    DATABASES,
    Balances,
    Counters,
    PlantHarness,
    PlantSpec,
    ProcessCloud,
    SampleKey,
    assert_books_exact,
    assert_rollups_exact,
    assert_samples_exact,
    plant_harness,
    read_samples,
    sim_config,
    start_counting,
)
from tests.plant_harness import database_url as _database_url
from tests.support import (
    Mosquitto,
    PostgresCluster,
    postgres_cluster,
    sqlite_write_lock,
    wait_for,
)

pytestmark = pytest.mark.mosquitto

SPEC = PlantSpec(cycle_time_factor=0.1, mtbf_s=1e9, probe_tags=4)
"""Moderate rates: machines 10x faster than the demo's, a poll every 200 ms, about 100 samples/s."""
BUSY_SPEC = PlantSpec(cycle_time_factor=0.1, mtbf_s=1e9, poll_interval_ms=50, probe_tags=12)
"""About 1 000 samples/s in some 60 DDATA/s: the cloud always has a batch in flight."""
LIVE_PARTS = 10
"""Parts counted live before a fault (about 2 s of production)."""
FAULT_PARTS = 20
"""Parts the line makes during a fault (about 3 s)."""
QUEUE_SIZE = 300
"""The cloud's ingest queue in the database test: small, so it fills while writes fail."""
HISTORY_S = 600
"""The edge outage of scenario 4: ten minutes of production waiting in the outbox."""
KILL_ATTEMPTS = 5
"""Kills of the busy cloud until one lands while samples are in flight."""
WRITE_FAILED = "database write failed"
"""What the cloud's batcher logs when a write fails and it starts retrying."""


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _database_url(request, tmp_path)


@dataclass(frozen=True, slots=True)
class Exact:
    """What a scenario proved exact."""

    good: int
    scrap: int
    samples: int
    series: int


async def assert_exact_after(harness: PlantHarness, before: Counters, stock: Balances) -> Exact:
    """Stop the line; once the cloud has caught up, its books, samples and rollups are exact."""
    await harness.stop_line()
    after = harness.counters()
    try:
        await harness.wait_cloud_caught_up(timeout=30)
    except AssertionError as exc:
        status = harness.edge.status()
        raise AssertionError(
            f"{exc}\n  the edge: connected={status.connected} host_online={status.host_online}"
            f" live={status.live} outbox_depth={status.outbox_depth}"
        ) from None
    good, scrap = await assert_books_exact(harness, before, after, stock)
    assert good >= LIVE_PARTS + FAULT_PARTS
    # Everything the edge buffered is published; then it stops, and the spy's record is final.
    await wait_for(
        lambda: harness.edge.outbox_depth() == 0, timeout=30, what="the edge's outbox drained"
    )
    await harness.stop_edge()
    samples = await assert_samples_exact(harness)
    series = await assert_rollups_exact(harness)
    exact = Exact(good, scrap, samples, len(series))
    print(f"exact: {exact}")
    return exact


async def produce_during_fault(harness: PlantHarness) -> None:
    """Let the line make FAULT_PARTS more parts."""
    await harness.wait_output(harness.good() + FAULT_PARTS)


def process_cloud(harness: PlantHarness) -> ProcessCloud:
    assert isinstance(harness.cloud, ProcessCloud)
    return harness.cloud


# --- 1. broker restart ----------------------------------------------------------------------


async def test_broker_restart_mid_production(
    mosquitto: Mosquitto, tmp_path: Path, database_url: str
) -> None:
    async with plant_harness(
        tmp_path, mosquitto, database_url, SPEC, cloud_process=True, spy=True
    ) as harness:
        before, stock = await start_counting(harness, LIVE_PARTS)
        await asyncio.to_thread(mosquitto.stop)
        await wait_for(lambda: not harness.edge.status().connected, 6, what="edge disconnected")
        await produce_during_fault(harness)
        await asyncio.to_thread(mosquitto.start)
        await harness.wait_online()
        await wait_for(lambda: harness.spy.reconnects > 0, what="the spy back on the broker")
        await assert_exact_after(harness, before, stock)


# --- 2. cloud SIGKILL in the middle of a batch ----------------------------------------------


def kill_rng() -> random.Random:
    """The random source of a kill's moment; the seed is printed, TAKTLINE_KILL_SEED repeats it."""
    seed = int(os.environ.get("TAKTLINE_KILL_SEED", random.randrange(2**32)))
    print(f"kill seed {seed} (TAKTLINE_KILL_SEED={seed} repeats it)")
    return random.Random(seed)


async def test_cloud_killed_mid_batch(
    mosquitto: Mosquitto, tmp_path: Path, database_url: str
) -> None:
    rng = kill_rng()
    async with plant_harness(
        tmp_path, mosquitto, database_url, BUSY_SPEC, cloud_process=True, spy=True
    ) as harness:
        cloud, spy, machines = process_cloud(harness), harness.spy, set(harness.machines)
        before, stock = await start_counting(harness, LIVE_PARTS)
        for attempt in range(1, KILL_ATTEMPTS + 1):
            # A random moment: as a message arrives, after a random number of further samples
            # (0.2 .. 2 s of them). The cloud is receiving that message too.
            await spy.reach(len(spy.samples) + rng.randrange(200, 2000))
            seen = set(spy.samples_of(machines))
            killed_at = datetime.now(UTC)
            await cloud.kill()
            committed = await asyncio.to_thread(read_samples, harness.database_url, machines)
            in_flight = seen - committed.keys()
            # The proof that the kill hit ingestion mid-way: published, not committed.
            if in_flight:
                break
            # On a loaded machine the cloud can commit that message before the signal lands:
            # that kill proves nothing, so the cloud comes back and is killed again.
            print(f"kill {attempt} landed between batches: again")
            await harness.start_cloud()
            await harness.wait_online()
        else:
            pytest.fail(
                f"{KILL_ATTEMPTS} kills in a row found everything the broker carried committed"
            )
        print(f"at the kill: {len(in_flight)} samples published but not committed")

        await wait_for(lambda: not harness.edge.status().live, 15, what="the edge not live")
        await produce_during_fault(harness)
        await harness.start_cloud()
        await harness.wait_online()
        try:
            await assert_exact_after(harness, before, stock)
        except AssertionError as exc:
            stored = await asyncio.to_thread(read_samples, harness.database_url, machines)
            lost = in_flight - stored.keys()
            raise AssertionError(
                f"{exc}\n  of the {len(in_flight)} samples in flight at the kill"
                f" ({killed_at.isoformat(timespec='milliseconds')}), {len(lost)} are not stored"
            ) from None


# --- 3. database restart (PostgreSQL) / locked for seconds (SQLite) -----------------------


class DatabaseOutage(Protocol):
    """A database the test can take away and give back."""

    @property
    def url(self) -> str:
        """The cloud's database URL."""
        ...

    def down(self) -> AbstractAsyncContextManager[None]:
        """The database is unusable for writes while the block runs."""
        ...


@dataclass
class PostgresRestart:
    """A private cluster stopped with -m immediate (a crash: no checkpoint), then started."""

    cluster: PostgresCluster

    @property
    def url(self) -> str:
        return self.cluster.dsn

    @asynccontextmanager
    async def down(self) -> AsyncIterator[None]:
        await asyncio.to_thread(self.cluster.stop, "immediate")
        try:
            yield
        finally:
            await asyncio.to_thread(self.cluster.start)


@dataclass
class SqliteLocked:
    """Another process holds the file's write lock: the cloud's writes wait out their busy
    timeout, then fail."""

    path: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def down(self) -> AbstractAsyncContextManager[None]:
        return sqlite_write_lock(self.path)


@pytest.fixture(params=DATABASES)
def database_outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseOutage]:
    """SQLite: a file another process can lock. PostgreSQL: a cluster of the test's own."""
    if request.param == "postgres":
        with postgres_cluster() as cluster:
            yield PostgresRestart(cluster)
    else:
        yield SqliteLocked(tmp_path / "cloud.db")


async def ingest_queue_depth(harness: PlantHarness) -> int:
    """The cloud's ingest queue depth (GET /metrics: served without the database)."""
    response = await harness.http.get(harness.base_url + "/metrics")
    response.raise_for_status()
    found = re.search(r"^ingest_queue_depth (\S+)$", response.text, re.MULTILINE)
    assert found is not None, "GET /metrics has no ingest_queue_depth"
    return int(float(found.group(1)))


async def test_database_restart_while_ingesting(
    mosquitto: Mosquitto, tmp_path: Path, database_outage: DatabaseOutage
) -> None:
    async with plant_harness(
        tmp_path,
        mosquitto,
        database_outage.url,
        SPEC,
        cloud_process=True,
        spy=True,
        cloud_settings={"sample_queue_size": QUEUE_SIZE},
    ) as harness:
        cloud = process_cloud(harness)
        before, stock = await start_counting(harness, LIVE_PARTS)
        log_start = cloud.log_size()
        async with database_outage.down():
            # Writes fail and are retried; the samples wait in the queue until it is full, and
            # then the host waits too (back-pressure): nothing is dropped.
            await wait_for(
                lambda: WRITE_FAILED in cloud.log_since(log_start),
                timeout=30,
                interval=0.1,
                what="a failed database write",
            )

            async def queue_full() -> bool:
                return await ingest_queue_depth(harness) >= QUEUE_SIZE

            await wait_for(queue_full, timeout=20, interval=0.1, what="the ingest queue full")
            await produce_during_fault(harness)
        await wait_for(
            lambda: "database writes recovered" in cloud.log_since(log_start),
            timeout=30,
            interval=0.1,
            what="database writes recovered",
        )
        await assert_exact_after(harness, before, stock)


# --- 4. a 10-minute edge outage, replayed -------------------------------------------------


@dataclass(frozen=True, slots=True)
class History:
    """What the edge buffered while it could not publish."""

    keys: frozenset[SampleKey]
    counters: Counters
    """Machine -> (good, scrap) at the end of it."""


def fill_outbox(config: EdgeConfig, sim: PlantSimConfig, seconds: int, end: datetime) -> History:
    """Store `seconds` of the line's production before `end` in the edge's outbox, the way an
    agent that could not publish stores it: the line's process model (another seed, same
    machines and rates) polled at the edge's interval, decoded with the edge's tag map, reported
    by exception, flagged historical."""
    model = LineModel(sim.with_seed(sim.seed + 1))
    tags = {device.id: device.to_tags() for device in config.devices}
    (poll_ms,) = {device.poll_interval_ms for device in config.devices}
    start = end.replace(microsecond=end.microsecond // 1000 * 1000) - timedelta(seconds=seconds)
    reported: dict[tuple[str, str], TagValue] = {}
    samples: list[Sample] = []
    for poll in range(1, seconds * 1000 // poll_ms + 1):
        model.step(poll_ms / 1000)
        at = start + timedelta(milliseconds=poll * poll_ms)
        for machine in model.machines:
            words = encode_status(machine.snapshot())
            for tag in tags[machine.id]:
                value = tag.decode(words[tag.address : tag.address + tag.words])
                old = reported.get((machine.id, tag.metric))
                if tag.changed(old, value):
                    reported[(machine.id, tag.metric)] = value
                    samples.append(Sample(machine.id, tag.metric, at, value, tag.datatype))
    with Outbox(config.outbox.path, config.outbox.max_bytes) as outbox:
        for chunk in range(0, len(samples), 10_000):
            outbox.append(samples[chunk : chunk + 10_000], historical=True)
    return History(
        keys=frozenset((s.device, s.metric, to_millis(s.timestamp)) for s in samples),
        counters={m.id: (m.snapshot().good, m.snapshot().scrap) for m in model.machines},
    )


async def test_ten_minute_edge_outage_replayed(
    mosquitto: Mosquitto, tmp_path: Path, database_url: str
) -> None:
    async with plant_harness(
        tmp_path, mosquitto, database_url, SPEC, cloud_process=True, spy=True, start_edge=False
    ) as harness:
        history = await asyncio.to_thread(
            fill_outbox, harness.edge_config, sim_config(SPEC), HISTORY_S, datetime.now(UTC)
        )
        # The PLCs kept counting through the outage (retentive counters): they go on from there.
        for machine, (good, scrap) in history.counters.items():
            harness.plant.model.machine(machine).preset_counters(good, scrap)
        await harness.start_edge()  # replays the backlog while the line runs and data flows live
        before, stock = await start_counting(harness, LIVE_PARTS)
        await produce_during_fault(harness)
        exact = await assert_exact_after(harness, before, stock)

    seen = harness.spy.samples
    assert history.keys <= seen.keys(), "the edge did not publish all of its backlog"
    assert all(True in seen[key].flags for key in history.keys), "backlog not flagged historical"
    assert exact.samples > len(history.keys), "no live samples"
    print(f"backlog of {len(history.keys)} samples over {HISTORY_S} s replayed")


# --- 5. two ingest workers, one killed --------------------------------------------------------


async def committed_batches(harness: PlantHarness, worker: ProcessCloud) -> float:
    """Batches a worker has committed (its GET /metrics)."""
    response = await harness.http.get(f"http://127.0.0.1:{worker.port}/metrics")
    response.raise_for_status()
    found = re.search(r"^batch_commit_seconds_count (\S+)$", response.text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_two_workers_one_killed(
    mosquitto: Mosquitto, tmp_path: Path, database_url: str
) -> None:
    async with plant_harness(
        tmp_path,
        mosquitto,
        database_url,
        SPEC,
        cloud_process=True,
        spy=True,
        start_edge=False,
        cloud_settings={"mqtt_shared_group": "ingest"},
    ) as harness:
        rng = kill_rng()
        # Same host id, same database, one shared subscription; both hear the births.
        second = await harness.start_worker("taktline-cloud-ingest-2")
        await harness.start_edge()
        before, stock = await start_counting(harness, LIVE_PARTS)

        async def both_ingest() -> bool:
            first = await committed_batches(harness, process_cloud(harness))
            return first > 0 and await committed_batches(harness, second) > 0

        await wait_for(both_ingest, timeout=10, interval=0.1, what="both workers committing")
        # As a message arrives (the broker hands each to one of the two), after a random number
        # of further samples; not restarted: the first worker carries on alone.
        await harness.spy.reach(len(harness.spy.samples) + rng.randrange(20, 200))
        await second.kill()
        await produce_during_fault(harness)
        await assert_exact_after(harness, before, stock)
