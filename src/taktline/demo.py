"""The demo plant in one process: embedded broker, simulated PLCs, edge agent, cloud, big screen.

It wires the real components over real sockets (Modbus TCP, MQTT, HTTP, websockets) exactly as
they run on separate machines in production; only the broker is the embedded amqtt instead of
Mosquitto. The work orders of ``config/plant.yaml`` are released and started through the cloud's
REST API, as a supervisor would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from taktline.broker import embedded_broker
from taktline_cloud.app import run_cloud
from taktline_cloud.settings import CloudSettings
from taktline_edge.agent import EdgeAgent
from taktline_edge.config import EdgeConfig
from taktline_edge.config import load_config as load_edge_config
from taktline_simulators.config import PlantSimConfig
from taktline_simulators.config import load_config as load_sim_config
from taktline_simulators.modbus_server import SimulatedPlant, run_plant

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 10.0


class DemoError(Exception):
    """The demo could not start (the message says which part and why)."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the demo runs on. Port 0 means any free port (tests)."""

    config_dir: Path = Path("config")
    data_dir: Path = Path("var/demo")
    dashboard_dir: Path = Path("dashboards/dist")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    mqtt_port: int = 1884
    modbus_ephemeral: bool = False
    """Bind the simulated PLCs to free ports instead of those in simulators.yaml."""
    fresh: bool = False
    """Delete the demo's database and outbox first."""
    rate_window_s: float = 120.0
    speed_pct: int | None = None
    """Run every simulated machine at this percentage of its nominal speed."""


@dataclass(slots=True)
class DemoEndpoints:
    """Where the running demo can be reached."""

    http_url: str
    mqtt: tuple[str, int]
    modbus: dict[str, tuple[str, int]] = field(default_factory=dict)


async def run_demo(
    options: DemoOptions,
    stop: asyncio.Event,
    on_ready: Callable[[DemoEndpoints, SimulatedPlant], object] | None = None,
) -> None:
    """Run the whole plant until `stop` is set; `on_ready` once the work orders are started."""
    sim_config, edge_config = _load_configs(options)
    work_orders = _demo_work_orders(options.config_dir / "plant.yaml")
    if options.fresh and options.data_dir.exists():
        shutil.rmtree(options.data_dir)
    options.data_dir.mkdir(parents=True, exist_ok=True)

    async with AsyncExitStack() as stack:
        broker = await stack.enter_async_context(embedded_broker(port=options.mqtt_port))
        plant = await stack.enter_async_context(run_plant(sim_config))
        if options.speed_pct is not None:
            for machine in sim_config.machines:
                plant.model.machine(machine.id).set_speed(options.speed_pct)

        settings = CloudSettings(
            database_url=f"sqlite:///{options.data_dir / 'taktline.db'}",
            plant_file=options.config_dir / "plant.yaml",
            mqtt_host=broker.host,
            mqtt_port=broker.port,
            http_host=options.http_host,
            http_port=options.http_port,
            dashboard_dir=options.dashboard_dir,
            rate_window_s=options.rate_window_s,
            group_id=edge_config.sparkplug.group_id,
            host_id=edge_config.sparkplug.primary_host_id,
        )
        read = {d.id for d in edge_config.devices}
        if read - set(plant.endpoints):
            missing = sorted(read - set(plant.endpoints))
            raise DemoError(f"edge.yaml devices {missing} are not in simulators.yaml")
        edge_config = edge_config.with_endpoints(
            broker=(broker.host, broker.port),
            devices={m: ep for m, ep in plant.endpoints.items() if m in read},
            outbox_path=options.data_dir / f"edge-{edge_config.sparkplug.edge_node_id}-outbox.db",
        )

        cloud_stop = asyncio.Event()
        http_port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        async with asyncio.TaskGroup() as tasks:
            cloud = tasks.create_task(
                run_cloud(settings, cloud_stop, on_ready=http_port.set_result), name="cloud"
            )
            first: set[asyncio.Future[Any]] = {cloud, http_port}
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if not http_port.done():
                await cloud  # it failed to start: its error propagates
                raise DemoError("the cloud stopped before it served HTTP")
            base = f"http://{options.http_host}:{http_port.result()}"
            try:
                async with EdgeAgent(edge_config):
                    await _start_work_orders(base, work_orders)
                    endpoints = DemoEndpoints(
                        base, (broker.host, broker.port), dict(plant.endpoints)
                    )
                    _announce(endpoints)
                    if on_ready is not None:
                        on_ready(endpoints, plant)
                    await stop.wait()
            finally:
                cloud_stop.set()


def _load_configs(options: DemoOptions) -> tuple[PlantSimConfig, EdgeConfig]:
    sim_config = load_sim_config(options.config_dir / "simulators.yaml")
    if options.modbus_ephemeral:
        machines = tuple(m.model_copy(update={"port": 0}) for m in sim_config.machines)
        sim_config = sim_config.model_copy(update={"machines": machines})
    return sim_config, load_edge_config(options.config_dir / "edge.yaml")


def _demo_work_orders(plant_file: Path) -> list[str]:
    """The numbers of the work orders that plant.yaml lists for the demo to start."""
    try:
        data = yaml.safe_load(plant_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DemoError(f"{plant_file}: {exc}") from exc
    return [str(order["number"]) for order in data.get("work_orders", [])]


async def _start_work_orders(base: str, numbers: list[str]) -> None:
    """Release and start the demo's work orders through the REST API (idempotent)."""
    for number in numbers:
        status = (await _http("GET", f"{base}/api/work-orders/{number}"))["status"]
        if status == "created":
            status = (await _http("POST", f"{base}/api/work-orders/{number}/release"))["status"]
        if status == "released":
            status = (await _http("POST", f"{base}/api/work-orders/{number}/start"))["status"]
        log.info("work order %s: %s", number, status)


async def _http(method: str, url: str) -> dict[str, object]:
    def call() -> dict[str, object]:
        body = b"" if method == "POST" else None
        request = urllib.request.Request(url, method=method, data=body)  # noqa: S310 - our URL
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:  # noqa: S310
                answer: dict[str, object] = json.load(response)
                return answer
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise DemoError(f"{method} {url}: HTTP {exc.code}: {detail}") from exc

    return await asyncio.to_thread(call)


def _announce(endpoints: DemoEndpoints) -> None:
    plcs = ", ".join(f"{m} {h}:{p}" for m, (h, p) in endpoints.modbus.items())
    log.info("MQTT broker (embedded) %s:%s; PLCs (Modbus TCP) %s", *endpoints.mqtt, plcs)
    log.info("big screen: %s/   REST API: %s/docs", endpoints.http_url, endpoints.http_url)
