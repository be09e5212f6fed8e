"""Ingest metrics: counters, lag bookkeeping, per-app registries, batcher reports, /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from taktline_cloud.errors import Invalid
from taktline_cloud.historian.samples import Sample
from taktline_cloud.host.batcher import Batcher, IngestItem
from taktline_cloud.host.sessions import NodeStatus
from taktline_cloud.observability import IngestMetrics, install_metrics, message_type
from taktline_contract.backoff import Backoff

T0 = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)


def sample(i: int) -> Sample:
    return Sample("M1", "Production/GoodCount", T0 + timedelta(milliseconds=i), Decimal(i))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def value(metrics: IngestMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


def test_message_types_are_a_bounded_label() -> None:
    assert message_type("spBv1.0/PLANT-1/DDATA/GW-1/M1") == "DDATA"
    assert message_type("spBv1.0/PLANT-1/NBIRTH/GW-1") == "NBIRTH"
    assert message_type("spBv1.0/STATE/taktline-cloud") == "STATE"
    assert message_type("spBv1.0/PLANT-1/NOPE/GW-1") == "other"
    assert message_type("plain/topic") == "other"


def test_counts_messages_batches_and_dead_letters() -> None:
    metrics = IngestMetrics()
    metrics.message("spBv1.0/PLANT-1/DDATA/GW-1/M1")
    metrics.message("spBv1.0/PLANT-1/DDATA/GW-1/M2")
    metrics.message("spBv1.0/PLANT-1/NBIRTH/GW-1")
    metrics.batch_committed(7, 0.02)
    metrics.batch_committed(3, 0.5)
    metrics.dead_letter("decode")
    assert value(metrics, "messages_received_total", type="DDATA") == 2
    assert value(metrics, "messages_received_total", type="NBIRTH") == 1
    assert value(metrics, "samples_ingested_total") == 10
    assert value(metrics, "batches_total") == 2
    assert value(metrics, "batch_commit_seconds_count") == 2
    assert value(metrics, "batch_commit_seconds_bucket", le="0.025") == 1
    assert value(metrics, "batch_size_samples_sum") == 10
    assert value(metrics, "dead_letters_total", reason="decode") == 1


def test_lag_is_the_age_of_the_oldest_uncommitted_sample() -> None:
    clock = Clock()
    metrics = IngestMetrics(clock=clock)
    status = NodeStatus("GW-1", None, True, T0)
    assert metrics.lag_seconds() == 0
    metrics.received([status, sample(0), sample(1), sample(2)])  # at 100: 3 samples
    clock.now = 101.0
    metrics.received([sample(3), sample(4)])  # at 101: 2 samples
    metrics.received([status])  # no samples: nothing to wait for
    clock.now = 105.0
    assert value(metrics, "ingest_lag_seconds") == 5
    # The batch held the first message's samples and one of the second's.
    clock.now = 106.0
    metrics.batch_committed(4, 0.01)
    assert value(metrics, "ingest_commit_lag_seconds_sum") == 6
    assert metrics.lag_seconds() == 5  # the second message still has one sample queued
    metrics.samples_dropped(1)  # refused: given up, no longer lagging
    assert value(metrics, "ingest_lag_seconds") == 0


def test_gauges_read_their_sources_at_scrape_time() -> None:
    metrics = IngestMetrics()
    online: dict[str, list[str]] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    metrics.watch_online(lambda: online)
    metrics.watch_queue(queue.qsize)
    assert value(metrics, "edge_nodes_online") == 0
    online["GW-1"] = ["M1", "M2"]
    online["GW-2"] = []
    queue.put_nowait(1)
    assert value(metrics, "edge_nodes_online") == 2
    assert value(metrics, "devices_online") == 2
    assert value(metrics, "ingest_queue_depth") == 1


def test_each_instance_has_its_own_registry() -> None:
    first, second = IngestMetrics(), IngestMetrics()  # the default registry would refuse this
    first.batch_committed(5, 0.01)
    assert value(first, "samples_ingested_total") == 5
    assert value(second, "samples_ingested_total") == 0


def test_exposition_parses_as_prometheus_text() -> None:
    metrics = IngestMetrics()
    metrics.batch_committed(2, 0.01)
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    assert families["samples_ingested"].type == "counter"
    assert families["batch_commit_seconds"].type == "histogram"
    assert families["edge_nodes_online"].type == "gauge"
    assert {"ingest_lag_seconds", "ingest_queue_depth", "devices_online"} <= families.keys()


class Sink:
    """Stores samples, refusing any sample whose value is 13 (as the service refuses bad data)."""

    def __init__(self) -> None:
        self.stored: list[Sample] = []

    async def record_samples(self, samples: Sequence[Sample]) -> None:
        if any(s.value == 13 for s in samples):
            raise Invalid("unlucky sample")
        self.stored.extend(samples)

    async def record_node_status(self, status: NodeStatus) -> None:
        pass

    async def record_dead_letter(self, letter: object) -> None:
        pass


async def test_the_batcher_reports_commits_and_drops() -> None:
    metrics = IngestMetrics()
    queue: asyncio.Queue[IngestItem] = asyncio.Queue()
    sink = Sink()
    batcher = Batcher(
        queue, sink, max_size=500, max_age_s=60, backoff=Backoff(0.001, 0.002), metrics=metrics
    )
    items = [sample(i) for i in range(20)]
    metrics.received(items)
    for item in items:
        queue.put_nowait(item)
    assert value(metrics, "ingest_queue_depth") == 20
    queue.put_nowait(None)
    await asyncio.wait_for(batcher.run(), 10)
    assert len(sink.stored) == 19
    assert value(metrics, "samples_ingested_total") == 19
    assert value(metrics, "batches_total") >= 2  # the refused sample split the batch
    assert value(metrics, "batch_commit_seconds_count") == value(metrics, "batches_total")
    assert value(metrics, "ingest_lag_seconds") == 0  # everything is stored or given up
    assert value(metrics, "ingest_queue_depth") == 0


def test_metrics_are_served_as_prometheus_text_outside_the_api_schema() -> None:
    app = FastAPI()
    metrics = install_metrics(app)
    assert app.state.metrics is metrics
    metrics.batch_committed(4, 0.01)
    with TestClient(app) as client:
        response = client.get("/metrics")
        schema = client.get("/openapi.json").json()
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["samples_ingested"].samples[0].value == 4
    assert "/metrics" not in schema["paths"]
