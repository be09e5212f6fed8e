"""Real counterparts for the edge agent's tests: a Modbus TCP PLC and a Sparkplug primary host.

No tests here: the integration and fault tests of the edge import these.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from taktline_contract.sparkplug import DataType as SpDataType
from taktline_contract.sparkplug import (
    HostState,
    MessageType,
    Metric,
    Payload,
    Topic,
    decode_payload,
    encode_payload,
    encode_state,
    parse_topic,
    state_topic,
)
from taktline_edge.agent import EdgeAgent
from taktline_edge.config import EdgeConfig
from tests.support import wait_for

GROUP, NODE, HOST_ID = "PLANT-T", "GW-T", "test-host"
MACHINE_TAGS: list[dict[str, Any]] = [
    {"metric": "Production/GoodCount", "address": 0, "type": "uint32"},
    {"metric": "Production/ScrapCount", "address": 2, "type": "uint32"},
    {"metric": "Production/State", "address": 4, "type": "uint16"},
    {"metric": "Production/FaultCode", "address": 5, "type": "uint16"},
    {"metric": "Production/CycleTimeMs", "address": 6, "type": "uint32"},
    {"metric": "Process/Temperature", "address": 8, "type": "float32", "deadband": 0.2},
]


class Plc:
    """A Modbus TCP server on a free port with 200 holding registers (any unit id)."""

    def __init__(self) -> None:
        self.port = 0
        self.server = self._server()

    def _server(self) -> ModbusTcpServer:
        device = SimDevice(
            id=0, simdata=[SimData(0, count=200, values=0, datatype=SimType.REGISTERS)]
        )
        return ModbusTcpServer(device, address=("127.0.0.1", self.port))

    async def start(self) -> None:
        await self.server.serve_forever(background=True)
        transport: Any = self.server.transport
        self.port = int(transport.sockets[0].getsockname()[1])

    async def set(self, address: int, words: list[int]) -> None:
        await self.server.async_setValues(1, 16, address, words)

    async def set_u32(self, address: int, value: int) -> None:
        await self.set(address, [value >> 16, value & 0xFFFF])

    async def get(self, address: int, count: int = 1) -> list[int]:
        return [int(v) for v in await self.server.async_getValues(1, 3, address, count)]

    async def stop(self) -> None:
        await self.server.shutdown()  # type: ignore[no-untyped-call]

    async def restart(self) -> None:
        """Serve again on the same port (a power-cycled PLC: registers start from 0)."""
        self.server = self._server()
        await self.start()


@contextlib.asynccontextmanager
async def plc() -> AsyncIterator[Plc]:
    server = Plc()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def edge_config(
    broker_port: int,
    plc_ports: dict[str, int],
    outbox: Path,
    *,
    poll_ms: int = 50,
    keepalive_s: int = 5,
    client_id: str = "edge-under-test",
) -> EdgeConfig:
    """An edge config for devices `plc_ports` (id -> Modbus port) and a private broker."""
    return EdgeConfig.model_validate(
        {
            "sparkplug": {"group_id": GROUP, "edge_node_id": NODE, "primary_host_id": HOST_ID},
            "mqtt": {
                "host": "127.0.0.1",
                "port": broker_port,
                "client_id": client_id,
                "keepalive_s": keepalive_s,
            },
            "outbox": {"path": str(outbox)},
            "devices": [
                {
                    "id": device,
                    "modbus": {"host": "127.0.0.1", "port": port, "unit_id": 1, "timeout_s": 1.0},
                    "poll_interval_ms": poll_ms,
                    "tags": MACHINE_TAGS,
                }
                for device, port in plc_ports.items()
            ],
        }
    )


async def wait_polled(
    agent: EdgeAgent, device: str, value: object, metric: str = "Production/GoodCount"
) -> None:
    """Wait until the agent's poller has read `value` for `device`'s `metric`."""

    def seen() -> bool:
        sample = agent.current(device).get(metric)
        return sample is not None and sample.value == value

    await wait_for(seen, what=f"{device} {metric} polled as {value!r}")


def edge_yaml(config: EdgeConfig) -> str:
    """The YAML text of `config` (for the agent run as a subprocess)."""
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)


@dataclass
class Received:
    """One Sparkplug message the host received."""

    topic: Topic
    payload: Payload
    raw: bytes
    retained: bool

    @property
    def kind(self) -> MessageType:
        return self.topic.message_type

    @property
    def device(self) -> str | None:
        return self.topic.device_id

    def metric(self, name: str) -> Metric:
        for metric in self.payload.metrics:
            if metric.name == name:
                return metric
        raise KeyError(name)


@dataclass
class SparkplugHost:
    """A minimal Sparkplug primary host: STATE (retained, with an offline will), records spBv1.0/#.

    With `persistent=True` it keeps its MQTT session (clean_session=False) and reconnects when
    the broker goes away, as a real host does, so nothing published meanwhile is lost to it.
    """

    port: int
    host_id: str = HOST_ID
    persistent: bool = False
    messages: list[Received] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    online_on_connect: bool = True
    _client: aiomqtt.Client | None = None
    _task: asyncio.Task[None] | None = None
    _stamp: datetime | None = None

    async def __aenter__(self) -> SparkplugHost:
        self._task = asyncio.create_task(self._run(), name="test-host")
        await asyncio.wait_for(self.connected.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.1)

    async def _session(self) -> None:
        self._stamp = datetime.now(UTC)
        will = aiomqtt.Will(
            state_topic(self.host_id),
            encode_state(HostState(False, self._stamp)),
            qos=1,
            retain=True,
        )
        client = aiomqtt.Client(
            "127.0.0.1",
            self.port,
            identifier=f"host-{self.host_id}",
            will=will,
            clean_session=not self.persistent,
            keepalive=5,
            timeout=5,
        )
        async with client:
            self._client = client
            await client.subscribe("spBv1.0/#", qos=1)
            if self.online_on_connect:
                await self.publish_state(True)
            self.connected.set()
            async for message in client.messages:
                topic = parse_topic(str(message.topic))
                if isinstance(topic, Topic):
                    raw = bytes(message.payload) if isinstance(message.payload, bytes) else b""
                    self.messages.append(Received(topic, decode_payload(raw), raw, message.retain))

    async def publish_state(self, online: bool) -> None:
        """Publish this host's retained STATE (online or offline)."""
        assert self._client is not None
        # Online gets a fresh timestamp; offline repeats the online one, as a host's will does.
        if online:
            self._stamp = datetime.now(UTC)
        assert self._stamp is not None
        await self._client.publish(
            state_topic(self.host_id),
            encode_state(HostState(online, self._stamp)),
            qos=1,
            retain=True,
        )

    async def command_rebirth(self, group: str = GROUP, node: str = NODE) -> None:
        assert self._client is not None
        payload = Payload.of(
            datetime.now(UTC), [Metric("Node Control/Rebirth", SpDataType.BOOLEAN, True)]
        )
        await self._client.publish(
            str(Topic(group, MessageType.NCMD, node)), encode_payload(payload), qos=1
        )

    async def command(self, device: str, metrics: list[Metric]) -> None:
        assert self._client is not None
        payload = Payload.of(datetime.now(UTC), metrics)
        await self._client.publish(
            str(Topic(GROUP, MessageType.DCMD, NODE, device)), encode_payload(payload), qos=1
        )

    def of(self, kind: MessageType, device: str | None = None) -> list[Received]:
        return [
            m for m in self.messages if m.kind == kind and (device is None or m.device == device)
        ]

    async def wait(self, condition: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
        return await wait_for(condition, timeout=timeout, what=what)


@dataclass
class DeviceSeries:
    """What the host learnt about one device: alias -> metric name, and every sample it got."""

    names: dict[int, str] = field(default_factory=dict)
    samples: list[tuple[str, datetime, Any, bool]] = field(default_factory=list)


def series(messages: list[Received]) -> dict[str, DeviceSeries]:
    """Per device: DBIRTH aliases and the DDATA samples (metric, timestamp, value, historical)."""
    out: dict[str, DeviceSeries] = {}
    for message in messages:
        if message.device is None:
            continue
        dev = out.setdefault(message.device, DeviceSeries())
        if message.kind == MessageType.DBIRTH:
            for metric in message.payload.metrics:
                assert metric.name is not None
                assert metric.alias is not None
                dev.names[metric.alias] = metric.name
        elif message.kind == MessageType.DDATA:
            for metric in message.payload.metrics:
                assert metric.alias is not None
                assert metric.timestamp is not None
                name = dev.names[metric.alias]
                dev.samples.append((name, metric.timestamp, metric.value, metric.is_historical))
    return out
