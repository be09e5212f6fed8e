"""Outages while the line keeps running: the counts stay exact (nothing lost, nothing twice).

(a) the cloud stops gracefully and starts again on the same database; (b) the broker goes away
and comes back on the same port; (c) the cloud process is killed with SIGKILL while it ingests.
Each runs on SQLite and on PostgreSQL with the real simulators, edge agent and Mosquitto.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.plant_harness import (
    DATABASES,
    Balances,
    Counters,
    PlantHarness,
    PlantSpec,
    ProcessCloud,
    SparkplugSpy,
    assert_books_exact,
    plant_harness,
    start_counting,
)
from tests.plant_harness import database_url as _database_url
from tests.support import Mosquitto, wait_for

pytestmark = pytest.mark.mosquitto

SPEC = PlantSpec(cycle_time_factor=0.1, mtbf_s=1e9)
LIVE_PARTS = 10
"""Parts counted live before an outage (about 2 s of production)."""
OUTAGE_PARTS = 30
"""Parts the line makes during an outage (about 5 s)."""
BUFFERED = 20
"""Samples the edge must hold in its outbox during an outage, at least."""


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _database_url(request, tmp_path)


async def produce_while_away(harness: PlantHarness) -> None:
    """Let the line make OUTAGE_PARTS while the edge cannot deliver; it must buffer them."""
    await wait_for(lambda: not harness.edge.status().live, timeout=15, what="edge not live")
    await harness.wait_output(harness.good() + OUTAGE_PARTS)
    await wait_for(
        lambda: harness.edge.status().outbox_depth >= BUFFERED,
        timeout=10,
        what=f"at least {BUFFERED} samples buffered in the edge's outbox",
    )


async def assert_exact_after(harness: PlantHarness, before: Counters, stock: Balances) -> None:
    """Stop the line; once the cloud has caught up, its books match the PLCs exactly."""
    await harness.stop_line()
    after = harness.counters()
    await harness.wait_cloud_caught_up(timeout=30)
    good, _ = await assert_books_exact(harness, before, after, stock)
    assert good >= LIVE_PARTS + OUTAGE_PARTS


async def test_cloud_stopped_and_restarted_misses_nothing(
    mosquitto: Mosquitto, tmp_path: Path, database_url: str
) -> None:
    async with (
        plant_harness(tmp_path, mosquitto, database_url, SPEC) as harness,
        SparkplugSpy(mosquitto).running() as spy,
    ):
        before, stock = await start_counting(harness, LIVE_PARTS)
        await harness.stop_cloud()
        await produce_while_away(harness)
        replayed_before = spy.historical_metrics()

        await harness.start_cloud()
        await wait_for(
            lambda: spy.historical_metrics() > replayed_before,
            timeout=15,
            what="the outbox replayed with is_historical",
        )
        await assert_exact_after(harness, before, stock)


async def test_broker_outage_misses_nothing(
    mosquitto: Mosquitto, tmp_path: Path, database_url: str
) -> None:
    async with plant_harness(tmp_path, mosquitto, database_url, SPEC) as harness:
        before, stock = await start_counting(harness, LIVE_PARTS)
        await asyncio.to_thread(mosquitto.stop)
        # both sides notice the dead broker promptly (not after a 10 s publish timeout)
        await wait_for(lambda: not harness.edge.status().connected, 6, what="edge disconnected")
        await produce_while_away(harness)

        await asyncio.to_thread(mosquitto.start)
        await harness.wait_online()
        await assert_exact_after(harness, before, stock)


async def test_cloud_killed_while_ingesting_misses_nothing(
    mosquitto: Mosquitto, tmp_path: Path, database_url: str
) -> None:
    async with plant_harness(
        tmp_path, mosquitto, database_url, SPEC, cloud_process=True
    ) as harness:
        assert isinstance(harness.cloud, ProcessCloud)
        before, stock = await start_counting(harness, LIVE_PARTS)
        await harness.cloud.kill()  # the line runs and samples flow: mid-ingest
        await produce_while_away(harness)

        await harness.start_cloud()
        await harness.wait_online()
        await assert_exact_after(harness, before, stock)
