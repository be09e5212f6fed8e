"""Prometheus metrics of the ingest path: what came in, what was stored, how far behind we are.

Each cloud app owns one `IngestMetrics` with its own `CollectorRegistry` (never the process-wide
default): tests and several apps in one process must not share or collide on counters. The host
and the batcher report through the named methods below instead of touching metric objects, so
the metric names stay in this one module and callers stay readable.

Lag is the age of the oldest sample received from the broker but not yet committed (or given
up): the host stamps each received batch of samples, the batcher settles them as it commits, in
the same first-in first-out order as the ingest queue. It grows while the database falls behind
and is 0 when everything received is stored.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from taktline_cloud.historian.samples import Sample

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format served at /metrics."""

MESSAGE_TYPES: Final = frozenset(
    {"NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD", "STATE"}
)
"""Label values of messages_received_total; anything else counts as "other" (bounded labels)."""

BATCH_SIZE_BUCKETS: Final = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

OnlineSource = Callable[[], Mapping[str, Sequence[str]]]
"""Online edge nodes, each with its online devices (`SparkplugSessions.online`)."""


def message_type(topic: str) -> str:
    """The Sparkplug message type of `topic` as a bounded label value."""
    parts = topic.split("/")
    if len(parts) >= 3 and parts[0] == "spBv1.0":
        kind = "STATE" if parts[1] == "STATE" else parts[2]
        if kind in MESSAGE_TYPES:
            return kind
    return "other"


class IngestMetrics:
    """The ingest path's counters, histograms and gauges, in a registry of their own."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        self._pending: deque[list[float]] = deque()
        """[received at, samples not yet settled] per received message, oldest first."""
        self._online: OnlineSource = dict
        self._queue_depth: Callable[[], int] = lambda: 0
        registry = self.registry
        self._messages = Counter(
            "messages_received",
            "MQTT messages received by the primary host, by Sparkplug message type.",
            ["type"],
            registry=registry,
        )
        self._samples = Counter(
            "samples_ingested",
            "Samples committed to the database.",
            registry=registry,
        )
        self._batches = Counter(
            "batches", "Sample batches committed to the database.", registry=registry
        )
        self._dead_letters = Counter(
            "dead_letters",
            "Messages or samples set aside as dead letters, by kind of reason.",
            ["reason"],
            registry=registry,
        )
        self._commit_seconds = Histogram(
            "batch_commit_seconds",
            "Time to commit one batch of samples (one transaction), retries included.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._batch_size = Histogram(
            "batch_size_samples",
            "Samples per committed batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self._commit_lag = Histogram(
            "ingest_commit_lag_seconds",
            "From broker receipt of a batch's oldest sample to its commit.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        lag = Gauge(
            "ingest_lag_seconds",
            "Age of the oldest sample received but not yet committed (0 when caught up).",
            registry=registry,
        )
        lag.set_function(self.lag_seconds)
        depth = Gauge(
            "ingest_queue_depth",
            "Items (samples, status changes) waiting in the ingest queue.",
            registry=registry,
        )
        depth.set_function(lambda: float(self._queue_depth()))
        nodes = Gauge(
            "edge_nodes_online", "Edge nodes (gateways) currently online.", registry=registry
        )
        nodes.set_function(lambda: float(len(self._online())))
        devices = Gauge("devices_online", "Devices currently online.", registry=registry)
        devices.set_function(lambda: float(sum(len(d) for d in self._online().values())))

    # -- sources read at scrape time -------------------------------------------------------

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Report `depth()` as the ingest queue depth (e.g. `queue.qsize`)."""
        self._queue_depth = depth

    def watch_online(self, online: OnlineSource) -> None:
        """Report the edge nodes and devices `online()` returns as online."""
        self._online = online

    # -- the primary host ------------------------------------------------------------------

    def message(self, topic: str) -> None:
        """One MQTT message arrived on `topic`."""
        self._messages.labels(message_type(topic)).inc()

    def received(self, items: Iterable[object]) -> None:
        """The samples among `items` (one message's) are about to enter the ingest queue:
        their lag starts now."""
        count = sum(isinstance(item, Sample) for item in items)
        if count > 0:
            self._pending.append([self._clock(), float(count)])

    def dead_letter(self, reason: str) -> None:
        """One message or sample was set aside as a dead letter; `reason` is a short kind
        (e.g. "decode", "refused"), never free text: every value becomes a time series."""
        self._dead_letters.labels(reason).inc()

    # -- the batcher -----------------------------------------------------------------------

    def batch_committed(self, size: int, seconds: float) -> None:
        """A batch of `size` samples was committed in `seconds`."""
        self._batches.inc()
        self._samples.inc(size)
        self._commit_seconds.observe(seconds)
        self._batch_size.observe(size)
        oldest = self._settle(size)
        if oldest is not None:
            self._commit_lag.observe(max(0.0, self._clock() - oldest))

    def samples_dropped(self, count: int) -> None:
        """`count` samples left the queue without being committed (no longer lagging)."""
        self._settle(count)

    def _settle(self, count: int) -> float | None:
        """Take `count` samples off the pending front; the receipt time of the oldest."""
        oldest = self._pending[0][0] if self._pending else None
        remaining = float(count)
        while remaining > 0 and self._pending:
            head = self._pending[0]
            taken = min(head[1], remaining)
            head[1] -= taken
            remaining -= taken
            if head[1] <= 0:
                self._pending.popleft()
        return oldest

    def lag_seconds(self) -> float:
        """Age of the oldest sample received and not yet settled; 0 when caught up."""
        if not self._pending:
            return 0.0
        return max(0.0, self._clock() - self._pending[0][0])

    # -- exposition ------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """All metrics in the Prometheus text format (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


class RetentionMetrics:
    """Rows the retention job deleted, by table, registered in another registry (the ingest's)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._deleted = Counter(
            "retention_deleted_rows",
            "Rows deleted by the retention job, by table (samples, rollup_1m, rollup_1h).",
            ["table"],
            registry=registry,
        )

    def deleted(self, table: str, rows: int) -> None:
        """The job deleted `rows` rows of `table`."""
        self._deleted.labels(table).inc(rows)


def install_metrics(app: FastAPI) -> IngestMetrics:
    """Give `app` its own `IngestMetrics` (in `app.state.metrics`) and serve them at GET /metrics.

    The retention job's `RetentionMetrics` share its registry (`app.state.retention_metrics`).
    Left out of the OpenAPI schema: it is for Prometheus, not for API clients.
    """
    metrics = IngestMetrics()
    app.state.metrics = metrics
    app.state.retention_metrics = RetentionMetrics(metrics.registry)

    async def scrape() -> Response:
        # Async on purpose: the gauges read the host's and batcher's state, which lives on the
        # event loop, so they are read there and never from a thread pool.
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    app.add_api_route("/metrics", scrape, methods=["GET"], include_in_schema=False)
    return metrics
