"""GET /metrics of the whole cloud in-process (real mosquitto, SQLite and PostgreSQL): what a test
edge node sends shows up as ingested samples, committed batches and an online gateway, and its
NDEATH takes the gateway offline again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taktline_contract.metrics import BD_SEQ, GOOD_COUNT, MACHINE_STATE, SCRAP_COUNT
from taktline_contract.sparkplug import DataType, Metric
from tests.integration.test_cloud_api import cloud_settings, running_cloud
from tests.integration.test_cloud_host import EdgeNode
from tests.support import Mosquitto, wait_for

pytestmark = pytest.mark.mosquitto

Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: httpx.AsyncClient) -> Scrape:
    """Every sample of GET /metrics, parsed as Prometheus text, by (name, sorted labels)."""
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


async def metric(http: httpx.AsyncClient, name: str, **labels: str) -> float | None:
    return (await scrape(http)).get((name, tuple(sorted(labels.items()))))


async def test_metrics_follow_ingestion_and_gateways(
    mosquitto: Mosquitto, tmp_path: Path, database_url: str
) -> None:
    settings = cloud_settings(tmp_path, mosquitto.port, database_url=database_url)
    async with (
        running_cloud(settings) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
        EdgeNode(mosquitto) as edge,
    ):
        await wait_for(lambda: _connected(http), what="the host online")
        before = await scrape(http)
        assert before[("samples_ingested_total", ())] == 0
        assert before[("edge_nodes_online", ())] == 0

        # Each DBIRTH metric and each DDATA metric is one sample.
        births = {m: {GOOD_COUNT: 1000, SCRAP_COUNT: 10, MACHINE_STATE: 1} for m in ("M1", "M2")}
        await edge.birth(births)
        sent = sum(len(values) for values in births.values())
        now = datetime.now(UTC)
        rounds = 5
        for n in range(1, rounds + 1):
            at = now + timedelta(seconds=n)
            for device in births:
                await edge.data(device, {GOOD_COUNT: 1000 + n, SCRAP_COUNT: 10}, at=at)
                sent += 2

        async def all_ingested() -> bool:
            return await metric(http, "samples_ingested_total") == sent

        await wait_for(all_ingested, timeout=20, what=f"{sent} samples ingested")
        after = await scrape(http)
        assert after[("messages_received_total", (("type", "NBIRTH"),))] == 1
        assert after[("messages_received_total", (("type", "DBIRTH"),))] == 2
        assert after[("messages_received_total", (("type", "DDATA"),))] == rounds * 2
        batches = after[("batches_total", ())]
        assert batches > 0
        assert after[("batch_commit_seconds_count", ())] == batches
        assert after[("batch_size_samples_sum", ())] == sent
        assert after[("edge_nodes_online", ())] == 1
        assert after[("devices_online", ())] == 2
        assert after[("ingest_lag_seconds", ())] == 0  # all received is committed
        assert after[("ingest_commit_lag_seconds_count", ())] == batches

        await edge.send("NDEATH", None, [Metric(BD_SEQ, DataType.UINT64, edge.bd_seq)])

        async def gateway_offline() -> bool:
            scraped = await scrape(http)
            return scraped[("edge_nodes_online", ())] == 0 and scraped[("devices_online", ())] == 0

        await wait_for(gateway_offline, timeout=10, what="the gateway offline after NDEATH")
        assert await metric(http, "messages_received_total", type="NDEATH") == 1
        assert await metric(http, "samples_ingested_total") == sent  # nothing counted twice


async def _connected(http: httpx.AsyncClient) -> bool:
    return bool((await http.get("/api/health")).json()["mqtt_connected"])
