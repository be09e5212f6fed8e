"""The whole loop for integration and fault tests: simulated PLCs, edge agent and cloud, wired.

`plant_harness` starts the simulated line on ephemeral Modbus ports, a cloud (in this event loop,
or as a `taktline-cloud run` subprocess that can be killed) on a given database with HTTP on a
free port, and an edge agent, all against a given broker. It uses copies of `config/*.yaml`
changed only where a test needs it (faster machines, no random faults, order quantities).
The cloud and the edge stop and start independently; the simulated line keeps running.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
import httpx
import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient

from taktline_cloud.app import run_cloud
from taktline_cloud.settings import CloudSettings
from taktline_contract.metrics import MachineState
from taktline_contract.sparkplug import Payload, decode_payload
from taktline_edge.agent import EdgeAgent
from taktline_edge.config import EdgeConfig
from taktline_edge.config import load_config as load_edge_config
from taktline_simulators.config import PlantSimConfig
from taktline_simulators.config import load_config as load_sim_config
from taktline_simulators.modbus_server import SimulatedPlant, run_plant
from tests.support import Mosquitto, wait_for

CONFIG = Path(__file__).resolve().parent.parent / "config"
HTTP_TIMEOUT_S = 10.0
MODBUS_TIMEOUT_S = 2.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
# Registers of config/simulators.yaml's map.
SPEED_REGISTER = 100
RUN_ENABLE_REGISTER = 102
_READY_LINE = re.compile(r"Taktline cloud on http://[\d.]+:(\d+)")


@dataclass(frozen=True, slots=True)
class PlantSpec:
    """What a test changes in the demo plant's configuration."""

    sales_quantity: str = "600"
    """SO-1001 line 1 (plant.yaml)."""
    work_order_quantity: str = "1000"
    """WO-1001 (plant.yaml)."""
    cycle_time_factor: float = 1.0
    """Every machine's nominal cycle time is multiplied by this (simulators.yaml)."""
    mtbf_s: float | None = None
    """Mean time between random faults of every machine; None keeps simulators.yaml's."""
    rate_window_s: float = 5.0
    """The cloud's measured-rate window."""


class Cloud(Protocol):
    """A cloud the harness can start and stop."""

    port: int | None

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def check(self) -> None: ...


class InProcessCloud:
    """`run_cloud` in this event loop; `stop()` is the graceful stop (its stop event)."""

    def __init__(self, settings: CloudSettings) -> None:
        self.settings = settings
        self.port: int | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start serving; return once HTTP listens (raise if the cloud failed to start)."""
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(
            run_cloud(self.settings, self._stop, on_ready=ready.set_result), name="cloud"
        )
        first: set[asyncio.Future[Any]] = {self._task, ready}
        await asyncio.wait(
            first, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if not ready.done():
            await self.stop()
            raise AssertionError("the cloud did not start serving HTTP")
        self.port = ready.result()

    async def stop(self) -> None:
        """Graceful stop: STATE offline, queued samples stored, database closed."""
        task, self._task = self._task, None
        self.port = None
        if task is None:
            return
        self._stop.set()
        await asyncio.wait_for(task, STOP_TIMEOUT_S)

    def check(self) -> None:
        """Raise the cloud's error if it stopped on its own."""
        if self._task is not None and self._task.done():
            self._task.result()
            raise AssertionError("the cloud stopped on its own")


class ProcessCloud:
    """`taktline-cloud run` as a child process (settings in TAKTLINE_* variables), killable."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.port: int | None = None
        self.starts = 0
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the process; return once its HTTP port is known from its log."""
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "taktline_cloud.cli", "run",
                env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=log,
            )  # fmt: skip
        self.starts += 1

        def port() -> int | None:
            self.check()
            with self.log_path.open("rb") as log:
                log.seek(log_start)
                found = _READY_LINE.search(log.read().decode(errors="replace"))
            return int(found.group(1)) if found else None

        self.port = await wait_for(port, timeout=START_TIMEOUT_S, interval=0.05, what="cloud up")

    async def stop(self) -> None:
        """SIGTERM: the CLI's graceful stop."""
        await self._end(signal.SIGTERM)

    async def kill(self) -> None:
        """SIGKILL: no STATE offline from us (the broker sends our will), nothing flushed."""
        await self._end(signal.SIGKILL)

    async def _end(self, how: signal.Signals) -> None:
        process, self._process = self._process, None
        self.port = None
        if process is None or process.returncode is not None:
            return
        process.send_signal(how)
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)

    def check(self) -> None:
        """Raise if the process exited on its own."""
        if self._process is not None and self._process.returncode is not None:
            log = self.log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"the cloud exited with {self._process.returncode}:\n{log}")


class PlantHarness:
    """A running plant: the simulated line, its edge agent and the cloud, each reachable."""

    def __init__(
        self, plant: SimulatedPlant, cloud: Cloud, edge_config: EdgeConfig, http: httpx.AsyncClient
    ) -> None:
        self.plant = plant
        self.cloud = cloud
        self.edge_config = edge_config
        self.http = http
        self._edge: EdgeAgent | None = None
        self._hmi: dict[str, AsyncModbusTcpClient] = {}

    @property
    def machines(self) -> list[str]:
        """Machine ids in flow order (the last one's good counter is the line's output)."""
        return [machine.id for machine in self.plant.model.machines]

    @property
    def base_url(self) -> str:
        """The running cloud's HTTP base URL (it changes when the cloud restarts)."""
        if self.cloud.port is None:
            raise AssertionError("the cloud is not running")
        return f"http://127.0.0.1:{self.cloud.port}"

    @property
    def edge(self) -> EdgeAgent:
        """The running edge agent."""
        if self._edge is None:
            raise AssertionError("the edge agent is not running")
        return self._edge

    # --- lifecycle ------------------------------------------------------------------------

    async def start_cloud(self) -> None:
        """Start the cloud (on the same database as before)."""
        await self.cloud.start()

    async def stop_cloud(self) -> None:
        """Stop the cloud gracefully."""
        await self.cloud.stop()

    async def start_edge(self) -> None:
        """Start an edge agent on the same outbox as before."""
        if self._edge is not None:
            raise AssertionError("the edge agent is already running")
        agent = EdgeAgent(self.edge_config)
        await agent.__aenter__()
        self._edge = agent

    async def stop_edge(self) -> None:
        """Stop the edge agent (its outbox keeps what is unsent)."""
        agent, self._edge = self._edge, None
        if agent is not None:
            await agent.stop()

    # --- REST ---------------------------------------------------------------------------------

    async def get(self, path: str, **params: Any) -> Any:
        """GET a JSON document from the cloud."""
        self.cloud.check()
        response = await self.http.get(self.base_url + path, params=params)
        response.raise_for_status()
        return response.json()

    async def post(self, path: str) -> Any:
        """POST (no body) to the cloud; its JSON answer."""
        self.cloud.check()
        response = await self.http.post(self.base_url + path)
        response.raise_for_status()
        return response.json()

    async def cloud_counters(self) -> dict[str, tuple[Decimal | None, Decimal | None]]:
        """Machine -> (good, scrap) as the cloud last heard them."""
        rows = await self.get("/api/machines")
        return {row["code"]: (_dec(row["good_count"]), _dec(row["scrap_count"])) for row in rows}

    async def wait_cloud_caught_up(self, timeout: float = 20.0) -> None:
        """Wait until the cloud shows every machine's true counters (the line must be stopped)."""
        truth = {m: (Decimal(g), Decimal(s)) for m, (g, s) in self.counters().items()}

        async def caught_up() -> bool:
            return await self.cloud_counters() == truth

        await wait_for(caught_up, timeout=timeout, interval=0.1, what=f"cloud showing {truth}")

    async def wait_online(self, timeout: float = 20.0) -> None:
        """Wait until the cloud shows every machine online, with its counters."""

        async def online() -> bool:
            rows = await self.get("/api/machines")
            return len(rows) == len(self.machines) and all(
                row["online"] and row["good_count"] is not None for row in rows
            )

        await wait_for(online, timeout=timeout, interval=0.1, what="every machine online")

    # --- the shop floor (Modbus writes, as a supervisor's HMI makes them) ------------------

    def counters(self) -> dict[str, tuple[int, int]]:
        """Machine -> (good, scrap): the simulated PLCs' true counters now."""
        return {m: (s.good, s.scrap) for m, s in self.plant.model.snapshots().items()}

    def good(self, machine: str | None = None) -> int:
        """A machine's (default: the line output's) true good counter."""
        return self.plant.model.snapshot(machine or self.machines[-1]).good

    async def write_all(self, register: int, value: int) -> None:
        """Write one holding register on every machine over Modbus TCP."""
        for machine in self.machines:
            client = self._hmi.get(machine)
            if client is None:
                host, port = self.plant.endpoints[machine]
                client = AsyncModbusTcpClient(host, port=port, timeout=MODBUS_TIMEOUT_S, retries=1)
                if not await client.connect():
                    raise AssertionError(f"HMI cannot connect to {machine} at {host}:{port}")
                self._hmi[machine] = client
            answer = await client.write_register(register, value, device_id=1)
            assert not answer.isError(), f"{machine}: write {register}={value}: {answer}"

    async def stop_line(self) -> None:
        """Run enable 0 everywhere; wait until no machine is in a cycle (counters final)."""
        await self.write_all(RUN_ENABLE_REGISTER, 0)
        await wait_for(
            lambda: all(
                s.state is not MachineState.RUNNING for s in self.plant.model.snapshots().values()
            ),
            timeout=10,
            what="every machine out of its last cycle",
        )

    async def start_line(self) -> None:
        """Run enable 1 everywhere."""
        await self.write_all(RUN_ENABLE_REGISTER, 1)

    async def set_speed(self, percent: int) -> None:
        """Every machine at `percent` % of its nominal speed."""
        await self.write_all(SPEED_REGISTER, percent)

    async def wait_output(self, at_least: int, timeout: float = 30.0) -> int:
        """Wait until the line's output counter reaches `at_least`; the counter then."""
        await wait_for(
            lambda: self.good() >= at_least, timeout=timeout, what=f"line output >= {at_least}"
        )
        return self.good()

    async def close(self) -> None:
        """Close the HMI connections."""
        for client in self._hmi.values():
            client.close()
        self._hmi.clear()


@asynccontextmanager
async def plant_harness(
    tmp_path: Path,
    broker: Mosquitto,
    database_url: str,
    spec: PlantSpec | None = None,
    *,
    cloud_process: bool = False,
) -> AsyncIterator[PlantHarness]:
    """Start line, cloud and edge against `broker`; stop them all on exit."""
    spec = spec or PlantSpec()
    plant_file = write_plant_file(tmp_path / "plant.yaml", spec)
    settings = CloudSettings(
        database_url=database_url,
        plant_file=plant_file,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        http_port=0,
        dashboard_dir=tmp_path / "no-dashboards",
        rate_window_s=spec.rate_window_s,
    )
    try:
        async with AsyncExitStack() as stack:
            harness = await _start(
                stack,
                tmp_path=tmp_path,
                broker=broker,
                settings=settings,
                cloud_process=cloud_process,
                spec=spec,
            )
            yield harness
    except BaseExceptionGroup as group:
        # The simulators' TaskGroup wraps whatever the test raised: show it unwrapped.
        if len(group.exceptions) != 1:
            raise
        error = group.exceptions[0]
        error.__suppress_context__ = True  # keep its own cause, hide the group
        raise error from error.__cause__


async def _start(
    stack: AsyncExitStack,
    *,
    tmp_path: Path,
    broker: Mosquitto,
    settings: CloudSettings,
    cloud_process: bool,
    spec: PlantSpec,
) -> PlantHarness:
    plant = await stack.enter_async_context(run_plant(sim_config(spec)))
    http = await stack.enter_async_context(httpx.AsyncClient(timeout=HTTP_TIMEOUT_S))
    cloud: Cloud
    if cloud_process:
        cloud = ProcessCloud(cloud_env(settings), tmp_path / "cloud.log")
    else:
        cloud = InProcessCloud(settings)
    edge_config = point_edge_at(
        load_edge_config(CONFIG / "edge.yaml"), broker, plant, tmp_path / "outbox.db"
    )
    harness = PlantHarness(plant, cloud, edge_config, http)
    stack.push_async_callback(harness.close)
    stack.push_async_callback(harness.stop_cloud)
    await harness.start_cloud()
    stack.push_async_callback(harness.stop_edge)
    await harness.start_edge()
    return harness


def sim_config(spec: PlantSpec) -> PlantSimConfig:
    """simulators.yaml on ephemeral ports, with the spec's cycle times and fault rate."""
    config = load_sim_config(CONFIG / "simulators.yaml")
    machines = tuple(
        m.model_copy(
            update={
                "port": 0,
                "cycle_time_s": m.cycle_time_s * spec.cycle_time_factor,
                "mtbf_s": spec.mtbf_s if spec.mtbf_s is not None else m.mtbf_s,
            }
        )
        for m in config.machines
    )
    return config.model_copy(update={"machines": machines})


def write_plant_file(path: Path, spec: PlantSpec) -> Path:
    """plant.yaml with the spec's sales order and work order quantities."""
    data = yaml.safe_load((CONFIG / "plant.yaml").read_text(encoding="utf-8"))
    (order,) = data["sales_orders"]
    order["lines"][0]["quantity"] = spec.sales_quantity
    (work_order,) = data["work_orders"]
    work_order["quantity"] = spec.work_order_quantity
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def point_edge_at(
    config: EdgeConfig, broker: Mosquitto, plant: SimulatedPlant, outbox: Path
) -> EdgeConfig:
    """edge.yaml re-pointed at the broker, the simulated PLCs' ports and a private outbox."""
    devices = []
    for device in config.devices:
        host, port = plant.endpoints[device.id]
        modbus = device.modbus.model_copy(update={"host": host, "port": port})
        devices.append(device.model_copy(update={"modbus": modbus}))
    return config.model_copy(
        update={
            "mqtt": config.mqtt.model_copy(update={"host": broker.host, "port": broker.port}),
            "outbox": config.outbox.model_copy(update={"path": outbox}),
            "devices": devices,
        }
    )


def cloud_env(settings: CloudSettings) -> dict[str, str]:
    """The TAKTLINE_* environment that gives a `taktline-cloud run` process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAKTLINE_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        env[f"TAKTLINE_{name.upper()}"] = str(value)
    return env


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


class SparkplugSpy:
    """A passive MQTT subscriber that keeps every DDATA payload of the group (an observer tool)."""

    def __init__(self, broker: Mosquitto, group: str = "PLANT-1") -> None:
        self.broker = broker
        self.topic = f"spBv1.0/{group}/DDATA/#"
        self.payloads: list[Payload] = []

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SparkplugSpy]:
        """Subscribe, collect in a task while the block runs."""
        client = aiomqtt.Client(
            self.broker.host, self.broker.port, identifier="taktline-test-spy", timeout=10
        )
        async with client:
            await client.subscribe(self.topic, qos=1, timeout=10)
            collector = asyncio.create_task(self._collect(client), name="spy")
            try:
                yield self
            finally:
                collector.cancel()
                await asyncio.gather(collector, return_exceptions=True)

    async def _collect(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if isinstance(message.payload, bytes):
                self.payloads.append(decode_payload(message.payload))

    def historical_metrics(self) -> int:
        """How many metrics seen so far were flagged is_historical."""
        return sum(m.is_historical for p in self.payloads for m in p.metrics)


# --- the books: what the cloud booked against what the PLCs counted -------------------------

Counters = Mapping[str, tuple[int, int]]
"""Machine -> (good, scrap), as `PlantHarness.counters` reads them."""
Balances = dict[tuple[str, str], Decimal]
"""(item, location) -> on hand."""


def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database a parametrized test runs on: "sqlite" (a tmp file) or "postgres"."""
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("postgres_dsn")
        return dsn
    return f"sqlite:///{tmp_path / 'cloud.db'}"


DATABASES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


async def balances(harness: PlantHarness) -> Balances:
    """On hand per (item, location), from GET /api/stock."""
    rows = await harness.get("/api/stock")
    return {(row["item"], row["location"]): Decimal(row["on_hand"]) for row in rows}


def bom(item: str = "FG-100") -> dict[str, Decimal]:
    """Component -> quantity per part, from plant.yaml."""
    data = yaml.safe_load((CONFIG / "plant.yaml").read_text(encoding="utf-8"))
    return {line["component"]: Decimal(line["quantity"]) for line in data["boms"][item]}


async def wait_work_order_good(
    harness: PlantHarness, good: int, number: str = "WO-1001", timeout: float = 10.0
) -> dict[str, Any]:
    """Wait until the work order has booked `good` parts; its row."""
    seen: list[dict[str, Any]] = []

    async def booked() -> bool:
        seen.append(await harness.get(f"/api/work-orders/{number}"))
        return Decimal(seen[-1]["good"]) == good

    try:
        await wait_for(booked, timeout=timeout, interval=0.1, what=f"{number} good == {good}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {number} is {seen[-1] if seen else None}") from None
    return seen[-1]


async def assert_books_exact(
    harness: PlantHarness, before: Counters, after: Counters, stock_before: Balances
) -> tuple[int, int]:
    """The work order, stock and ledger match the PLC counter deltas exactly; (good, scrap)."""
    output = harness.machines[-1]
    good = after[output][0] - before[output][0]
    scrap = sum(after[m][1] - before[m][1] for m in harness.machines)
    order = await wait_work_order_good(harness, good)
    assert (Decimal(order["good"]), Decimal(order["scrap"])) == (Decimal(good), Decimal(scrap))

    stock = await balances(harness)
    made = Decimal(good + scrap)
    for component, per_part in bom().items():
        key = (component, "WH1/RAW")
        assert stock_before[key] - stock[key] == made * per_part, f"{component} consumed"
    assert stock[("FG-100", "WH1/FG")] - stock_before[("FG-100", "WH1/FG")] == good

    ledger = await harness.get("/api/stock/ledger", limit=10_000)
    assert len(ledger) < 10_000, "the whole ledger was read"
    sums: dict[tuple[str, str], Decimal] = {}
    for entry in ledger:
        quantity = Decimal(entry["quantity"])
        to_key = (entry["item"], entry["to_location"])
        from_key = (entry["item"], entry["from_location"])
        sums[to_key] = sums.get(to_key, Decimal(0)) + quantity
        sums[from_key] = sums.get(from_key, Decimal(0)) - quantity
    assert {key: sums.get(key, Decimal(0)) for key in stock} == stock
    return good, scrap
