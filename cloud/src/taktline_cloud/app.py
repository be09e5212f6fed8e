"""Composition root of the cloud process: database, service, Sparkplug host, API, live feed.

`create_app(settings)` builds the FastAPI app; its lifespan opens the database and the service on
the single worker thread, loads the master data, and runs the host, the batcher and the
refresher in one TaskGroup. `run_cloud(settings, stop)` serves it in-process with uvicorn (the
CLI and the demo both use it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from datetime import timedelta
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from taktline_cloud.api import ApiContext, install_api
from taktline_cloud.errors import CloudError
from taktline_cloud.historian.dead_letters import DeadLetter, DeadLetterStore
from taktline_cloud.historian.retention import RetentionPolicy, retention_periodically
from taktline_cloud.historian.rollups import ROLLUP_INTERVAL_S, rollup_periodically
from taktline_cloud.historian.samples import Sample
from taktline_cloud.host import Batcher, HostOptions, NodeStatus, PrimaryHost
from taktline_cloud.host.batcher import IngestQueue
from taktline_cloud.live import LiveHub, ServiceGateway, ServiceWorker
from taktline_cloud.live.refresher import refresh_periodically
from taktline_cloud.observability import IngestMetrics, RetentionMetrics, install_metrics
from taktline_cloud.purchasing_service import PurchasingService
from taktline_cloud.service import PlantService
from taktline_cloud.settings import CloudSettings
from taktline_cloud.storage import Database

log = logging.getLogger(__name__)

FatalHandler = Callable[[BaseException], None]
DRAIN_TIMEOUT_S = 30.0
"""How long shutdown waits for queued samples to reach the database."""


class CloudRunError(CloudError):
    """The cloud could not start (database, master data, port), or stopped on a failure."""


class GatewaySink:
    """The batcher's sink: the service's ingestion calls, through the worker thread."""

    def __init__(self, gateway: ServiceGateway, dead_letters: DeadLetterStore) -> None:
        self._gateway = gateway
        self._dead_letters = dead_letters

    async def record_samples(self, samples: Sequence[Sample]) -> None:
        """Store one batch (one transaction); its events go live."""
        await self._gateway.apply(lambda plant: plant.record_samples(samples))

    async def record_node_status(self, status: NodeStatus) -> None:
        """Store an online/offline change; its events go live."""
        await self._gateway.apply(
            lambda plant: plant.record_node_status(
                status.edge_node, status.device, status.online, status.at
            )
        )

    async def record_dead_letter(self, letter: DeadLetter) -> None:
        """Store a rejected message (on the worker thread, in order with the rest)."""
        store = self._dead_letters
        await self._gateway.worker.run(lambda: store.add([letter]))


def create_app(settings: CloudSettings, *, on_fatal: FatalHandler | None = None) -> FastAPI:
    """The cloud's ASGI app. `on_fatal` hears of a failed start or a crashed background task."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with _running(app, settings, on_fatal or _log_only):
            yield

    app = FastAPI(
        title="Taktline cloud",
        summary="Work orders, stock and delivery promises driven live by machine counts.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_api(app)
    install_metrics(app)
    if settings.dashboard_dir.is_dir():
        # Mounted last: /api and /ws routes win, everything else is the dashboards' files.
        app.mount("/", StaticFiles(directory=settings.dashboard_dir, html=True), name="dashboards")
    else:
        log.info("no dashboards at %s: serving the API only", settings.dashboard_dir)
    return app


@contextlib.asynccontextmanager
async def _running(
    app: FastAPI, settings: CloudSettings, on_fatal: FatalHandler
) -> AsyncIterator[None]:
    worker = ServiceWorker()
    try:
        try:
            database = await worker.run(lambda: Database(settings.database_url))
        except Exception as exc:
            log.error("the cloud cannot open its database: %s", exc)
            on_fatal(exc)
            raise
        try:
            async with _serving(app, settings, worker, database, on_fatal):
                yield
        finally:
            await worker.run(database.close)
    finally:
        await worker.close()


@contextlib.asynccontextmanager
async def _serving(
    app: FastAPI,
    settings: CloudSettings,
    worker: ServiceWorker,
    database: Database,
    on_fatal: FatalHandler,
) -> AsyncIterator[None]:
    hub = LiveHub(settings.live_client_queue)
    try:
        window = timedelta(seconds=settings.rate_window_s)
        # The core's default shortest window (20 s) must not exceed a short configured window.
        shortest = min(timedelta(seconds=20), window)
        service = await worker.run(
            lambda: PlantService(
                database, rate_window=window, min_rate_window=shortest, capable_to_promise=True
            )
        )
        gateway = ServiceGateway(service, worker, hub)
        await gateway.apply(lambda plant: plant.load_master_data(settings.plant_file))
    except Exception as exc:
        log.error("the cloud cannot start: %s", exc)
        on_fatal(exc)
        raise
    queue = IngestQueue(maxsize=settings.sample_queue_size)
    dead_letters = DeadLetterStore(database)
    metrics: IngestMetrics = app.state.metrics
    host = PrimaryHost(HostOptions.from_settings(settings), queue, metrics=metrics)
    batcher = Batcher(
        queue,
        GatewaySink(gateway, dead_letters),
        max_size=settings.batch_size,
        max_age_s=settings.batch_max_age_s,
        metrics=metrics,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def supply_changed() -> None:
        # Purchasing runs on the worker thread (api/purchasing.py), as the gateway's calls do:
        # re-promise there and hand the events to the live feed, as `ServiceGateway.apply` does.
        try:
            events = service.repromise()
        except CloudError as exc:  # the purchasing change is committed: do not fail it
            log.error("re-promising after a purchasing change failed: %s", exc)
            return
        loop.call_soon_threadsafe(hub.publish, events)

    def items_changed(items: frozenset[str]) -> None:
        # On the worker thread too: a net-change MRP of the order's items, its event live.
        events = service.mrp_supply_changed(items)
        loop.call_soon_threadsafe(hub.publish, events)

    purchasing = PurchasingService(
        database,
        on_supply_changed=supply_changed,
        on_items_changed=items_changed,
        plan=service.mrp_plan,
    )
    app.state.taktline = ApiContext(
        gateway, hub, host, dead_letters=dead_letters, purchasing=purchasing
    )
    app.state.historian = database  # trend reads (api/trends.py), on the worker thread
    async with asyncio.TaskGroup() as tasks:

        def start(name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
            return tasks.create_task(_supervised(name, work, on_fatal), name=name)

        host_task = start("sparkplug-host", host.run(stop))
        batcher_task = start("sample-batcher", batcher.run())
        start("refresher", refresh_periodically(gateway, settings.refresh_interval_s, stop))
        start("rollups", rollup_periodically(worker.run, database, ROLLUP_INTERVAL_S, stop))
        retention_metrics: RetentionMetrics = app.state.retention_metrics
        start(
            "retention",
            retention_periodically(
                worker.run,
                database,
                RetentionPolicy.from_settings(settings.retention),
                settings.retention_interval_s,
                stop,
                on_deleted=retention_metrics.deleted,
            ),
        )
        # The backend only: a database URL may carry a password.
        log.info("cloud started on %s, Sparkplug group %s", database.backend, settings.group_id)
        try:
            yield
        finally:
            # Order matters: the host stops taking messages (STATE offline), then the batcher
            # writes what is queued, then the database closes (in _running).
            stop.set()
            await asyncio.wait({host_task})
            if not batcher_task.done():
                await queue.put(None)
                await asyncio.wait({batcher_task}, timeout=DRAIN_TIMEOUT_S)
                if not batcher_task.done():
                    log.error("queued samples not stored within %ss: giving up", DRAIN_TIMEOUT_S)
                    batcher_task.cancel()


async def _supervised(name: str, work: Coroutine[Any, Any, None], on_fatal: FatalHandler) -> None:
    try:
        await work
    except Exception as exc:
        log.critical("%s failed; the cloud cannot go on without it", name, exc_info=exc)
        on_fatal(exc)
        raise


def _log_only(exc: BaseException) -> None:
    """Default fatal handler: the lifespan's own error reporting does the rest."""


class _Server(uvicorn.Server):
    """uvicorn without its signal handling (the caller owns signals) and with a ready callback."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[int], object] | None) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_ready is not None:
            self._on_ready(self.bound_port())

    def bound_port(self) -> int:
        """The TCP port the server listens on (useful when asked for port 0)."""
        for server in self.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("the server has no listening socket")


async def run_cloud(
    settings: CloudSettings,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[int], object] | None = None,
) -> None:
    """Serve the cloud in this event loop until `stop` is set; `on_ready(port)` once listening.

    Raises `CloudRunError` when it cannot start, and re-raises a crashed background task.
    """
    fatal: list[BaseException] = []
    server: _Server | None = None

    def failed(exc: BaseException) -> None:
        fatal.append(exc)
        if server is not None:
            server.should_exit = True

    config = uvicorn.Config(
        create_app(settings, on_fatal=failed),
        host=settings.http_host,
        port=settings.http_port,
        http="httptools",
        ws="websockets-sansio",
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config, on_ready)
    quiet = _KnownFailure(fatal)
    logging.getLogger("uvicorn.error").addFilter(quiet)
    try:
        async with asyncio.TaskGroup() as tasks:
            serving = tasks.create_task(_serve(server, fatal), name="http-server")
            stopping = tasks.create_task(stop.wait(), name="stop-wait")
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            server.should_exit = True
            stopping.cancel()
    finally:
        logging.getLogger("uvicorn.error").removeFilter(quiet)
    not_started = serving.result()
    if not_started is not None:
        raise not_started
    if fatal:
        raise CloudRunError(f"the cloud stopped: {fatal[0]}") from fatal[0]


class _KnownFailure(logging.Filter):
    """Drops uvicorn's traceback of a failed start that a `CloudError` already explains."""

    def __init__(self, fatal: list[BaseException]) -> None:
        super().__init__()
        self._fatal = fatal

    def filter(self, record: logging.LogRecord) -> bool:
        known = bool(self._fatal) and isinstance(self._fatal[0], CloudError)
        return not (known and record.getMessage().startswith("Traceback"))


async def _serve(server: _Server, fatal: list[BaseException]) -> CloudRunError | None:
    """Serve until told to exit; the error when it could not start."""
    try:
        await server.serve()
    except SystemExit as exc:
        # uvicorn exits the process on a failed startup; in-process, that is an error to raise.
        cause = fatal[0] if fatal else exc
        error = CloudRunError(f"the cloud could not start: {cause if fatal else 'see the log'}")
        error.__cause__ = cause
        return error
    return None
