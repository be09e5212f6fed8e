"""The whole loop for integration and fault tests: simulated PLCs, edge agent and cloud, wired.

`plant_harness` starts the simulated line on ephemeral Modbus ports, a cloud (in this event loop,
or as a `taktline-cloud run` subprocess that can be killed) on a given database with HTTP on a
free port, and an edge agent, all against a given broker. It uses copies of `config/*.yaml`
changed only where a test needs it (faster machines, no random faults, order quantities).
The cloud and the edge stop and start independently; the simulated line keeps running.

For the strictest checks a `SparkplugSpy` subscribes before the edge is born, so it can decode
every DDATA with the births' aliases: `assert_samples_exact` then holds the cloud's `samples`
table to exactly what was published, and `assert_rollups_exact` its rollups to those samples.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import sqlite3
import struct
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
import httpx
import psycopg
import pytest
import yaml
from pydantic import SecretStr
from pydantic_core import to_jsonable_python
from pymodbus.client import AsyncModbusTcpClient

from taktline_cloud.app import run_cloud
from taktline_cloud.historian.rollups import refresh_all
from taktline_cloud.settings import CloudSettings
from taktline_cloud.storage import Database
from taktline_cloud.storage.sql import to_datetime, to_decimal
from taktline_contract import ContractError
from taktline_contract.metrics import MachineState
from taktline_contract.sparkplug import (
    DataType,
    MessageType,
    Metric,
    Payload,
    StateTopic,
    decode_payload,
    from_millis,
    parse_topic,
    to_millis,
)
from taktline_contract.sparkplug.codec import Value
from taktline_edge.agent import EdgeAgent
from taktline_edge.config import EdgeConfig, TagConfig
from taktline_edge.config import load_config as load_edge_config
from taktline_edge.tags import TagType
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
TEMPERATURE_REGISTER = 8
PROBE_METRIC = "Process/Probe{:02d}"
"""Extra process tags (`PlantSpec.probe_tags`): the temperature register under more names."""
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
    poll_interval_ms: int | None = None
    """Every device's edge poll interval; None keeps edge.yaml's."""
    probe_tags: int = 0
    """Extra tags per machine, all on the temperature register without a deadband: samples that
    change at (nearly) every poll. Probe 0 is the raw Float, the others carry an offset of their
    number (exact decimals, published as Double)."""


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
        await asyncio.wait(first, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
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

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._process is not None and self._process.returncode is None

    def log_size(self) -> int:
        """Bytes in the log so far (an offset for `log_since`)."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        """What the process logged after `offset`."""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def sibling(self, client_id: str, log_path: Path) -> ProcessCloud:
        """Another worker with the same settings (host id, database, shared group) but its own
        MQTT client id: the broker would disconnect one of two clients with the same id."""
        return ProcessCloud(dict(self.env, TAKTLINE_MQTT_CLIENT_ID=client_id), log_path)


class PlantHarness:
    """A running plant: the simulated line, its edge agent and the cloud, each reachable."""

    def __init__(
        self,
        plant: SimulatedPlant,
        cloud: Cloud,
        edge_config: EdgeConfig,
        http: httpx.AsyncClient,
        *,
        database_url: str = "",
        spy: SparkplugSpy | None = None,
    ) -> None:
        self.plant = plant
        self.cloud = cloud
        self.edge_config = edge_config
        self.http = http
        self.database_url = database_url
        self._spy = spy
        self._edge: EdgeAgent | None = None
        self._hmi: dict[str, AsyncModbusTcpClient] = {}
        self.workers: list[ProcessCloud] = []
        """Ingest workers started next to the cloud (`start_worker`); stopped at `close`."""

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

    @property
    def edge_running(self) -> bool:
        """True between `start_edge` and `stop_edge`."""
        return self._edge is not None

    @property
    def spy(self) -> SparkplugSpy:
        """The spy subscribed before the edge's first birth (`plant_harness(spy=True)`)."""
        if self._spy is None:
            raise AssertionError("this harness has no spy: plant_harness(..., spy=True)")
        return self._spy

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

    async def start_worker(self, client_id: str) -> ProcessCloud:
        """Start one more `taktline-cloud run` like the (process) cloud, as another ingest
        worker: same settings (set `mqtt_shared_group` to share the data), own client id."""
        if not isinstance(self.cloud, ProcessCloud):
            raise AssertionError("extra workers need plant_harness(..., cloud_process=True)")
        log_path = self.cloud.log_path.with_name(f"{client_id}.log")
        worker = self.cloud.sibling(client_id, log_path)
        self.workers.append(worker)
        await worker.start()
        return worker

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
        """Close the HMI connections; stop the extra workers."""
        for client in self._hmi.values():
            client.close()
        self._hmi.clear()
        for worker in self.workers:
            await worker.stop()


@asynccontextmanager
async def plant_harness(
    tmp_path: Path,
    broker: Mosquitto,
    database_url: str,
    spec: PlantSpec | None = None,
    *,
    cloud_process: bool = False,
    spy: bool = False,
    start_edge: bool = True,
    cloud_settings: Mapping[str, Any] | None = None,
) -> AsyncIterator[PlantHarness]:
    """Start line, cloud and edge against `broker`; stop them all on exit.

    `spy`: a `SparkplugSpy` (`harness.spy`) subscribes before the edge starts. `start_edge`
    False leaves starting the edge to the test (e.g. after filling its outbox).
    `cloud_settings`: more `CloudSettings` fields (e.g. `mqtt_shared_group`, `batch_size`).
    """
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
        **(cloud_settings or {}),
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
                spy=spy,
                start_edge=start_edge,
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
    spy: bool,
    start_edge: bool,
) -> PlantHarness:
    plant = await stack.enter_async_context(run_plant(sim_config(spec)))
    http = await stack.enter_async_context(httpx.AsyncClient(timeout=HTTP_TIMEOUT_S))
    cloud: Cloud
    if cloud_process:
        cloud = ProcessCloud(cloud_env(settings), tmp_path / "cloud.log")
    else:
        cloud = InProcessCloud(settings)
    edge_config = tune_edge(
        point_edge_at(
            load_edge_config(CONFIG / "edge.yaml"), broker, plant, tmp_path / "outbox.db"
        ),
        spec,
    )
    watcher = None
    if spy:
        watcher = await stack.enter_async_context(SparkplugSpy(broker).running())
    harness = PlantHarness(
        plant, cloud, edge_config, http, database_url=settings.database_url, spy=watcher
    )
    stack.push_async_callback(harness.close)
    stack.push_async_callback(harness.stop_cloud)
    await harness.start_cloud()
    stack.push_async_callback(harness.stop_edge)
    if start_edge:
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
        assert device.modbus is not None, f"{device.id}: the simulated PLCs speak Modbus"
        modbus = device.modbus.model_copy(update={"host": host, "port": port})
        devices.append(device.model_copy(update={"modbus": modbus}))
    return config.model_copy(
        update={
            "mqtt": config.mqtt.model_copy(update={"host": broker.host, "port": broker.port}),
            "outbox": config.outbox.model_copy(update={"path": outbox}),
            "devices": devices,
        }
    )


def tune_edge(config: EdgeConfig, spec: PlantSpec) -> EdgeConfig:
    """The spec's poll interval and probe tags on every device."""
    devices = []
    for device in config.devices:
        update: dict[str, Any] = {}
        if spec.poll_interval_ms is not None:
            update["poll_interval_ms"] = spec.poll_interval_ms
        if spec.probe_tags:
            probes = [
                TagConfig(
                    metric=PROBE_METRIC.format(i),
                    address=TEMPERATURE_REGISTER,
                    type=TagType.FLOAT32,
                    offset=Decimal(i) if i else None,
                )
                for i in range(spec.probe_tags)
            ]
            update["tags"] = [*device.tags, *probes]
        devices.append(device.model_copy(update=update))
    return config.model_copy(update={"devices": devices})


def cloud_env(settings: CloudSettings) -> dict[str, str]:
    """The TAKTLINE_* environment that gives a `taktline-cloud run` process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAKTLINE_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, dict | list):
            text = json.dumps(to_jsonable_python(value))  # complex settings are JSON
        else:
            text = str(value)
        env[f"TAKTLINE_{name.upper()}"] = text
    return env


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


SampleKey = tuple[str, str, int]
"""(machine, metric, timestamp in ms): a sample's identity, as the cloud's `samples` key."""


@dataclass(frozen=True, slots=True)
class SeenSample:
    """A sample as it went over the broker (its value as the Sparkplug payload carried it)."""

    value: Value
    datatype: DataType
    flags: frozenset[bool]
    """The `is_historical` flags it was published with (a replay may send it again flagged)."""


class SparkplugSpy:
    """A passive MQTT subscriber to the whole group: it decodes every DBIRTH and DDATA (with the
    births' aliases and datatypes) into the samples a primary host must store.

    Its session is persistent (clean_session false) and it reconnects, so a broker restart
    loses nothing for it: what the broker accepted meanwhile is queued for it. Subscribe it
    before the edge's first birth, or DDATA aliases are unknown to it (`problems` says so).
    """

    def __init__(self, broker: Mosquitto, group: str = "PLANT-1") -> None:
        self.broker = broker
        self.group = group
        self.topic = f"spBv1.0/{group}/#"
        self.payloads: list[Payload] = []
        """Every DDATA payload, in arrival order."""
        self.samples: dict[SampleKey, SeenSample] = {}
        self.problems: list[str] = []
        """What the spy could not decode, or a sample published twice with different values."""
        self.reconnects = 0
        self._identifier = f"taktline-test-spy-{uuid.uuid4().hex[:8]}"
        self._waiters: list[tuple[int, asyncio.Event]] = []
        self._births: dict[tuple[str, str], dict[int, tuple[str, DataType]]] = {}
        """(edge node, device) -> alias -> (metric name, datatype), from the DBIRTH."""

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SparkplugSpy]:
        """Subscribe (return once subscribed), collect in a task while the block runs."""
        subscribed = asyncio.Event()
        collector = asyncio.create_task(self._run(subscribed), name="spy")
        try:
            ready = asyncio.create_task(subscribed.wait(), name="spy-subscribed")
            await asyncio.wait(
                {collector, ready}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
            ready.cancel()
            if collector.done():
                collector.result()
            if not subscribed.is_set():
                raise AssertionError("the spy could not subscribe")
            yield self
        finally:
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)

    async def _run(self, subscribed: asyncio.Event) -> None:
        while True:
            client = aiomqtt.Client(
                self.broker.host,
                self.broker.port,
                identifier=self._identifier,
                clean_session=False,
                keepalive=5,
                timeout=10,
            )
            try:
                async with client:
                    await client.subscribe(self.topic, qos=1, timeout=10)
                    subscribed.set()
                    async for message in client.messages:
                        if isinstance(message.payload, bytes):
                            self.take(message.topic.value, message.payload)
            except aiomqtt.MqttError:
                if not subscribed.is_set():
                    raise
                # The broker restarts: it keeps our session and queues for it meanwhile.
                self.reconnects += 1
                await asyncio.sleep(0.1)

    def take(self, topic: str, raw: bytes) -> None:
        """Decode one received message (births and device data; the rest carries no samples)."""
        try:
            parsed = parse_topic(topic)
        except ContractError:
            return
        if isinstance(parsed, StateTopic) or parsed.group_id != self.group:
            return
        kind = parsed.message_type
        if kind is MessageType.NBIRTH:
            # A new session: its devices are born again before their data.
            for key in [k for k in self._births if k[0] == parsed.edge_node_id]:
                del self._births[key]
            return
        if kind not in (MessageType.DBIRTH, MessageType.DDATA) or parsed.device_id is None:
            return
        device = parsed.device_id
        known = self._births.get((parsed.edge_node_id, device), {})

        def datatype(name: str | None, alias: int | None) -> DataType | None:
            return known[alias][1] if alias in known else None

        try:
            payload = decode_payload(raw, datatype if kind is MessageType.DDATA else None)
        except ContractError as exc:
            self.problems.append(f"{topic}: undecodable: {exc}")
            return
        born = known
        if kind is MessageType.DBIRTH:
            born = {
                m.alias: (m.name, m.datatype)
                for m in payload.metrics
                if m.alias is not None and m.name is not None
            }
            self._births[(parsed.edge_node_id, device)] = born
        else:
            self.payloads.append(payload)
        for metric in payload.metrics:
            self._record(topic, device, born, metric, payload.timestamp)
        for count, reached in self._waiters:
            if len(self.samples) >= count:
                reached.set()

    async def reach(self, count: int, timeout: float = 20.0) -> None:
        """Return as soon as `count` samples have been seen: on the message that brings them
        (no polling delay), so the host subscribed with us has only just received it too."""
        reached = asyncio.Event()
        if len(self.samples) >= count:
            return
        waiter = (count, reached)
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await reached.wait()
        except TimeoutError:
            raise AssertionError(
                f"the spy saw {len(self.samples)} samples, not {count}, within {timeout}s"
            ) from None
        finally:
            self._waiters.remove(waiter)

    def _record(
        self,
        topic: str,
        device: str,
        born: Mapping[int, tuple[str, DataType]],
        metric: Metric,
        payload_time: datetime,
    ) -> None:
        if metric.is_transient or isinstance(metric.value, bytes):
            return  # not historised (Sparkplug), not storable
        name = metric.name
        if name is None:
            if metric.alias is None or metric.alias not in born:
                self.problems.append(f"{topic}: alias {metric.alias} without a birth")
                return
            name = born[metric.alias][0]
        key = (device, name, to_millis(metric.timestamp or payload_time))
        flag = metric.is_historical
        known = self.samples.get(key)
        if known is None:
            self.samples[key] = SeenSample(metric.value, metric.datatype, frozenset({flag}))
        elif not _same_wire_value(known.value, metric.value):
            self.problems.append(
                f"{_describe_key(key)} published as {known.value!r} and as {metric.value!r}"
            )
        elif flag not in known.flags:
            self.samples[key] = replace(known, flags=known.flags | {flag})

    def samples_of(self, machines: Collection[str]) -> dict[SampleKey, SeenSample]:
        """The samples seen so far of these machines."""
        return {key: seen for key, seen in self.samples.items() if key[0] in machines}

    def historical_metrics(self) -> int:
        """How many metrics seen so far were flagged is_historical."""
        return sum(m.is_historical for p in self.payloads for m in p.metrics)


def _same_wire_value(a: Value, b: Value) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _describe_key(key: SampleKey) -> str:
    machine, metric, ms = key
    return f"{machine} {metric} @ {from_millis(ms).isoformat(timespec='milliseconds')}"


# --- the samples: what the cloud stored against what went over the broker -----------------


@dataclass(frozen=True, slots=True)
class StoredSample:
    """One row of the cloud's `samples` table."""

    number: Decimal | None
    flag: bool | None
    text: str | None
    historical: bool


def read_samples(database_url: str, machines: Collection[str]) -> dict[SampleKey, StoredSample]:
    """Every stored sample of these machines, read straight from the database (blocking)."""
    rows = _query(
        database_url,
        "SELECT machine, metric, ts, value_num, value_bool, value_text, is_historical FROM samples",
    )
    return {
        (machine, metric, to_millis(to_datetime(ts))): StoredSample(
            None if number is None else to_decimal(number),
            None if flag is None else bool(flag),
            text,
            bool(historical),
        )
        for machine, metric, ts, number, flag, text, historical in rows
        if machine in machines
    }


def count_samples(database_url: str, machines: Collection[str]) -> int:
    """How many samples of these machines are stored (blocking)."""
    rows = _query(database_url, "SELECT machine, count(*) FROM samples GROUP BY machine")
    return sum(int(n) for machine, n in rows if machine in machines)


def _query(database_url: str, statement: str) -> list[tuple[Any, ...]]:
    """A read of the committed state, on a connection of its own (autocommit: no locks held)."""
    if database_url.startswith("sqlite:///"):
        db = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            return db.execute(statement).fetchall()
        finally:
            db.close()
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as pg:
        return pg.execute(statement.encode()).fetchall()


def matches(seen: SeenSample, stored: StoredSample) -> bool:
    """True when the stored row holds the published value exactly (and one of its flags).

    Integers are exact decimals; a Float (float32) must read back as the same float32, a Double
    as the same double; NaN and infinity mean "no reading" (all columns null).
    """
    if stored.historical not in seen.flags:
        return False
    value = seen.value
    number, flag, text = stored.number, stored.flag, stored.text
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return (number, flag, text) == (None, None, None)
    if isinstance(value, bool):
        return (number, flag, text) == (None, value, None)
    if isinstance(value, str):
        return (number, flag, text) == (None, None, value)
    if seen.datatype is DataType.DATETIME:
        return number is None and flag is None and text is not None
    if number is None or flag is not None or text is not None:
        return False
    if isinstance(value, int):
        return number == value
    assert isinstance(value, float)
    if seen.datatype is DataType.FLOAT:
        return struct.pack("<f", float(number)) == struct.pack("<f", value)
    return float(number) == value


@dataclass(frozen=True, slots=True)
class SampleDifference:
    """How the stored samples differ from the published ones."""

    missing: dict[SampleKey, SeenSample]
    """Published, not stored."""
    unexpected: dict[SampleKey, StoredSample]
    """Stored, never published."""
    wrong: dict[SampleKey, tuple[SeenSample, StoredSample]]
    """Stored with another value (or a flag it was never published with)."""

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong)

    def describe(self, published: int) -> str:
        """A report: how many of `published`, which machines, metrics, flags and times."""
        parts = [f"of {published} samples published"]
        if self.missing:
            summary = _summary({k: v.flags for k, v in self.missing.items()})
            parts.append(f"{len(self.missing)} MISSING from the database: {summary}")
        if self.unexpected:
            summary = _summary({k: frozenset({v.historical}) for k, v in self.unexpected.items()})
            parts.append(f"{len(self.unexpected)} stored but never published: {summary}")
        if self.wrong:
            examples = "; ".join(
                f"{_describe_key(k)}: published {seen.value!r} {set(seen.flags)}, stored {stored}"
                for k, (seen, stored) in sorted(self.wrong.items())[:5]
            )
            parts.append(f"{len(self.wrong)} stored with another value: {examples}")
        return "\n  ".join(parts)


def _summary(keys: Mapping[SampleKey, frozenset[bool]]) -> str:
    """Machines, metrics, historical flags and the time range of some samples."""
    stamps = sorted(ms for _, _, ms in keys)
    machines = Counter(m for m, _, _ in keys)
    metrics = Counter(metric for _, metric, _ in keys)
    flags = Counter(
        "historical" if flags == {True} else "live" if flags == {False} else "both"
        for flags in keys.values()
    )
    first, last = (
        from_millis(ms).isoformat(timespec="milliseconds") for ms in (stamps[0], stamps[-1])
    )
    return (
        f"{dict(machines)}, {dict(flags)}, time {first} .. {last}, metrics {dict(metrics)}, "
        f"e.g. {', '.join(_describe_key(k) for k in sorted(keys)[:3])}"
    )


def compare_samples(
    published: Mapping[SampleKey, SeenSample], stored: Mapping[SampleKey, StoredSample]
) -> SampleDifference:
    """The difference between what the spy saw published and what the database holds."""
    return SampleDifference(
        missing={k: v for k, v in published.items() if k not in stored},
        unexpected={k: v for k, v in stored.items() if k not in published},
        wrong={
            k: (v, stored[k])
            for k, v in published.items()
            if k in stored and not matches(v, stored[k])
        },
    )


async def assert_samples_exact(harness: PlantHarness, timeout: float = 30.0) -> int:
    """Once the edge is stopped: every sample the spy saw is stored exactly once (the table's
    key makes a second copy impossible), with its value, and nothing else is stored for the
    plant's machines. Waits up to `timeout` for the cloud to catch up; the number of samples."""
    if harness.edge_running:
        raise AssertionError("stop the edge first: it keeps publishing")
    spy, machines = harness.spy, set(harness.machines)
    assert not spy.problems, f"the spy could not follow the edge: {spy.problems[:5]}"
    assert spy.samples_of(machines), "the spy saw no samples"
    url = harness.database_url

    async def difference() -> SampleDifference:
        published = spy.samples_of(machines)
        return compare_samples(published, await asyncio.to_thread(read_samples, url, machines))

    async def same() -> bool:
        # Counting is cheap; the full comparison only once the count says it may hold.
        count = await asyncio.to_thread(count_samples, url, machines)
        return count >= len(spy.samples_of(machines)) and not await difference()

    try:
        await wait_for(same, timeout=timeout, interval=0.25, what="samples stored exactly")
    except AssertionError:
        published = len(spy.samples_of(machines))
        raise AssertionError(
            "the cloud's samples differ from what was published:\n  "
            + (await difference()).describe(published)
        ) from None
    assert not spy.problems, f"the spy could not follow the edge: {spy.problems[:5]}"
    published = len(spy.samples_of(machines))
    rows = await asyncio.to_thread(count_samples, url, machines)
    assert rows == published, f"{rows} rows for {published} samples: some stored twice"
    return published


# --- the rollups: 1-minute and 1-hour buckets against the raw samples -----------------------


def rollup_totals(database_url: str, table: str) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """(machine, metric) -> (sum of sample_count, exact sum of value_sum) over a rollup table."""
    totals: dict[tuple[str, str], tuple[int, Decimal]] = defaultdict(lambda: (0, Decimal(0)))
    for machine, metric, count, total in _query(
        database_url, f"SELECT machine, metric, sample_count, value_sum FROM {table}"
    ):
        n, s = totals[(machine, metric)]
        totals[(machine, metric)] = (n + int(count), s + to_decimal(total))
    return dict(totals)


def refresh_rollups_now(database_url: str) -> int:
    """Run the cloud's rollup job until its queue is empty (blocking); minutes recomputed."""
    with Database.open(database_url) as db:
        return refresh_all(db)


async def assert_rollups_exact(harness: PlantHarness) -> dict[tuple[str, str], int]:
    """After the rollup job: per (machine, metric), the 1-minute (and the 1-hour) rollups count
    every numeric stored sample once and sum their values exactly (Decimal); the counts."""
    machines = set(harness.machines)
    await asyncio.to_thread(refresh_rollups_now, harness.database_url)
    stored = await asyncio.to_thread(read_samples, harness.database_url, machines)
    expected: dict[tuple[str, str], tuple[int, Decimal]] = {}
    for (machine, metric, _), sample in stored.items():
        if sample.number is not None:
            n, s = expected.get((machine, metric), (0, Decimal(0)))
            expected[(machine, metric)] = (n + 1, s + sample.number)
    assert expected, "no numeric samples stored"
    for table in ("rollup_1m", "rollup_1h"):
        totals = await asyncio.to_thread(rollup_totals, harness.database_url, table)
        got = {key: value for key, value in totals.items() if key[0] in machines}
        wrong = {
            key: (got.get(key), expected.get(key))
            for key in got.keys() | expected.keys()
            if got.get(key) != expected.get(key)
        }
        assert not wrong, (
            f"{table} (sample count, value sum) differ from the samples (rollup, samples): "
            f"{dict(sorted(wrong.items())[:6])}"
        )
    return {key: n for key, (n, _) in expected.items()}


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


async def start_counting(harness: PlantHarness, live_parts: int = 10) -> tuple[Counters, Balances]:
    """Stop the line, read the counters, start WO-1001, run the line until it counts live;
    the counters and the stock at the start (for `assert_books_exact`)."""
    await harness.wait_online()
    await harness.stop_line()
    before = harness.counters()
    await harness.wait_cloud_caught_up()
    stock = await balances(harness)
    await harness.post("/api/work-orders/WO-1001/release")
    await harness.post("/api/work-orders/WO-1001/start")
    await harness.start_line()
    output = harness.machines[-1]
    await harness.wait_output(before[output][0] + live_parts)

    async def counting() -> bool:
        order = await harness.get("/api/work-orders/WO-1001")
        return int(order["good"]) > 0

    await wait_for(counting, timeout=10, interval=0.1, what="WO-1001 counting live")
    return before, stock


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
