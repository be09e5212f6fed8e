"""Sparkplug B completeness of the edge agent, seen by a real primary host over a real Mosquitto
with real pymodbus PLCs and the simulated plant's asyncua server: DCMD writes and their refusals,
device death and rebirth, NCMD Scan Rate, node metrics, and aliases that survive a restart.

(Primary-host gating and NCMD Rebirth are covered in test_edge_sparkplug.py.)
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from taktline_contract.sparkplug import (
    DataType,
    MessageType,
    Metric,
    Payload,
    Topic,
    encode_payload,
)
from taktline_contract.sparkplug.codec import Value
from taktline_edge.agent import EdgeAgent
from taktline_edge.config import EdgeConfig
from taktline_edge.device_states import DeviceState
from taktline_simulators.config import load_config as load_sim_config
from taktline_simulators.machine import LineModel
from taktline_simulators.opcua_server import serve_opcua
from tests.conftest import CONFIG
from tests.edge_support import (
    GROUP,
    HOST_ID,
    NODE,
    Plc,
    Received,
    SparkplugHost,
    edge_config,
    plc,
    wait_polled,
)
from tests.support import Mosquitto, free_port, wait_for

pytestmark = pytest.mark.mosquitto

SPEED, RUN = "Control/Speed", "Control/Run"
WRITABLE_TAGS: list[dict[str, Any]] = [
    # Tenths of a unit in the register, 0..150 units allowed.
    {
        "metric": SPEED,
        "address": 100,
        "type": "uint16",
        "scale": "0.1",
        "writable": True,
        "min": 0,
        "max": 150,
    },
    # The test PLC shares one address space between its tables: coil 150 is clear of the tags.
    {"metric": RUN, "address": 150, "table": "coil", "writable": True},
]
REFUSED, LAST_REFUSAL, SCAN_RATE = (
    "Commands/Refused",
    "Commands/Last Refusal",
    "Node Control/Scan Rate",
)


@pytest.fixture
async def plcs() -> AsyncIterator[dict[str, Plc]]:
    async with plc() as m1, plc() as m2:
        yield {"M1": m1, "M2": m2}


def _config(broker: int, plcs: dict[str, Plc], outbox: Path, *, poll_ms: int = 50) -> EdgeConfig:
    """The test edge config with writable tags on M1 and node metrics at most every 0.2 s."""
    ports = {device: server.port for device, server in plcs.items()}
    raw = edge_config(broker, ports, outbox, poll_ms=poll_ms).model_dump()
    raw["health"]["metrics_interval_s"] = 0.2
    raw["devices"][0]["tags"] += WRITABLE_TAGS
    return EdgeConfig.model_validate(raw)


def _node_names(host: SparkplugHost) -> dict[int, str]:
    """Alias -> name of the node metrics in the latest NBIRTH."""
    birth = host.of(MessageType.NBIRTH)[-1]
    return {m.alias: m.name for m in birth.payload.metrics if m.alias is not None and m.name}


def _node_value(host: SparkplugHost, name: str) -> Value:
    """The latest value of node metric `name` (NBIRTH, then NDATA by alias)."""
    names = _node_names(host)
    value: Value = host.of(MessageType.NBIRTH)[-1].metric(name).value
    for message in host.of(MessageType.NDATA):
        for metric in message.payload.metrics:
            if names.get(metric.alias or -1) == name:
                value = metric.value
    return value


def _device_aliases(host: SparkplugHost, device: str) -> dict[str, int]:
    birth = host.of(MessageType.DBIRTH, device)[-1]
    return {m.name: m.alias for m in birth.payload.metrics if m.name and m.alias is not None}


def _ddata_since(host: SparkplugHost, start: int, device: str, alias: int) -> list[Metric]:
    """The metrics with `alias` in DDATA of `device` received after message `start`."""
    return [
        m
        for message in host.messages[start:]
        if message.kind == MessageType.DDATA and message.device == device
        for m in message.payload.metrics
        if m.alias == alias
    ]


async def _ncmd(broker: int, metric: Metric) -> None:
    """Publish an NCMD to the node under test (as a host's tool would)."""
    async with aiomqtt.Client(
        "127.0.0.1", broker, identifier=f"ncmd-{uuid.uuid4().hex[:8]}", timeout=5
    ) as client:
        payload = encode_payload(Payload.of(datetime.now(UTC), [metric]))
        await client.publish(str(Topic(GROUP, MessageType.NCMD, NODE)), payload, qos=1)


async def _refused(host: SparkplugHost, count: int, reason: str) -> None:
    """Wait for NDATA to report `count` refused commands, the last one for `reason`."""

    def reported() -> bool:
        last = _node_value(host, LAST_REFUSAL)
        return _node_value(host, REFUSED) == count and isinstance(last, str) and reason in last

    await host.wait(reported, f"NDATA: {count} refused, last for {reason!r}", timeout=10)


def _seqs_in_order(messages: list[Received]) -> bool:
    seqs = [m.payload.seq for m in messages if m.kind not in (MessageType.NCMD, MessageType.DCMD)]
    return seqs == [i % 256 for i in range(len(seqs))]


def _register_is(server: Plc, address: int, value: int) -> Any:
    async def check() -> bool:
        return await server.get(address) == [value]

    return check


def _coil_is(server: Plc, address: int, value: bool) -> Any:
    async def check() -> bool:
        bits = await server.server.async_getValues(1, 1, address, 1)
        return bool(bits[0]) is value

    return check


async def _equals(value: Any, expected: object) -> bool:
    return bool(await value == expected)


async def test_dcmd_writes_writable_tags_and_reports_every_refusal(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with plc() as m1:
        plcs = {"M1": m1}
        config = _config(mosquitto.port, plcs, tmp_path / "outbox.db")
        await m1.set_u32(0, 7)
        async with SparkplugHost(mosquitto.port) as host, EdgeAgent(config) as agent:
            await host.wait(lambda: host.of(MessageType.DBIRTH, "M1"), "DBIRTH")
            await wait_polled(agent, "M1", 7)
            aliases = _device_aliases(host, "M1")
            assert host.of(MessageType.DBIRTH, "M1")[-1].metric(SPEED).datatype == DataType.DOUBLE

            # A scaled holding register, by alias: 12.5 units are 125 tenths in the PLC.
            await host.command("M1", [Metric(None, DataType.DOUBLE, 12.5, alias=aliases[SPEED])])
            await wait_for(
                _register_is(m1, 100, 125), what="Control/Speed = 12.5 in the PLC (125 tenths)"
            )
            await host.wait(
                lambda: any(m.value == 12.5 for m in _ddata_since(host, 0, "M1", aliases[SPEED])),
                "the written speed polled back as DDATA",
            )
            # A coil, by name.
            await host.command("M1", [Metric(RUN, DataType.BOOLEAN, True)])
            await wait_for(_coil_is(m1, 150, True), what="coil 150 set in the PLC")
            await host.wait(
                lambda: any(m.value is True for m in _ddata_since(host, 0, "M1", aliases[RUN])),
                "the coil polled back as DDATA",
            )
            assert agent.link.commands_refused == 0

            # Each refusal: counted and named in NDATA, and the actual value sent back as DDATA.
            good = "Production/GoodCount"
            cases: list[tuple[Metric, str, str | None, Value]] = [
                (Metric(good, DataType.UINT32, 999), "read-only", good, 7),
                (
                    Metric(None, DataType.DOUBLE, 200.0, alias=aliases[SPEED]),
                    "maximum 150",
                    SPEED,
                    12.5,
                ),
                (
                    Metric(None, DataType.DOUBLE, -0.5, alias=aliases[SPEED]),
                    "minimum 0",
                    SPEED,
                    12.5,
                ),
                (Metric(SPEED, DataType.STRING, "fast"), "not a number", SPEED, 12.5),
                (Metric(RUN, DataType.INT32, 7), "not a coil state", RUN, True),
                (Metric(None, DataType.DOUBLE, 1.0, alias=9999), "unknown metric", None, None),
            ]
            for count, (metric, reason, name, actual) in enumerate(cases, start=1):
                start = len(host.messages)
                await host.command("M1", [metric])
                await _refused(host, count, reason)
                if name is not None:
                    await host.wait(
                        lambda n=name, a=actual, s=start: any(
                            m.value == a and not m.is_historical
                            for m in _ddata_since(host, s, "M1", aliases[n])
                        ),
                        f"actual value of {name} sent back after the refusal",
                    )
            assert await m1.get(0, 2) == [0, 7], "the read-only counter was not written"
            assert await m1.get(100) == [125], "refused speeds were not written"
            assert agent.link.commands_refused == len(cases)
            assert _seqs_in_order(host.messages)


async def test_a_failed_device_dies_and_is_born_again_while_the_other_publishes(
    mosquitto: Mosquitto, plcs: dict[str, Plc], tmp_path: Path
) -> None:
    config = _config(mosquitto.port, plcs, tmp_path / "outbox.db")
    async with SparkplugHost(mosquitto.port) as host, EdgeAgent(config) as agent:
        await host.wait(lambda: len(host.of(MessageType.DBIRTH)) == 2, "births")
        m1_aliases = _device_aliases(host, "M1")
        good = m1_aliases["Production/GoodCount"]
        await plcs["M1"].set_u32(0, 5)
        await host.wait(lambda: any(m.value == 5 for m in _ddata_since(host, 0, "M1", good)), "M1")
        await host.wait(lambda: _node_value(host, "Devices/M1/Connected") is True, "M1 up")

        await plcs["M1"].stop()
        await host.wait(lambda: host.of(MessageType.DDEATH, "M1"), "DDEATH of M1")
        (death,) = host.of(MessageType.DDEATH, "M1")
        died_at = host.messages.index(death)
        failed_at = agent.devices["M1"].since
        assert failed_at is not None
        assert abs((death.payload.timestamp - failed_at).total_seconds()) <= 0.001, (
            "DDEATH is stamped when the device failed"
        )
        assert agent.status().devices == {"M1": False, "M2": True}
        # Node metrics say why: M1 not connected, its failed polls counted.
        await host.wait(
            lambda: (
                _node_value(host, "Devices/M1/Connected") is False
                and (_node_value(host, "Devices/M1/Errors") or 0) > 0
            ),
            "NDATA: M1 disconnected with errors",
        )
        assert _node_value(host, "Devices/M2/Connected") is True

        # M2 keeps publishing.
        m2_good = _device_aliases(host, "M2")["Production/GoodCount"]
        for value in (1, 2, 3):
            await plcs["M2"].set_u32(0, value)
            await host.wait(
                lambda v=value: any(
                    m.value == v for m in _ddata_since(host, died_at, "M2", m2_good)
                ),
                f"M2 DDATA {value} while M1 is dead",
            )
        # A write to the stopped PLC is refused and says why; a dead device gets no DDATA.
        await host.command("M1", [Metric(None, DataType.DOUBLE, 20.0, alias=m1_aliases[SPEED])])
        await _refused(host, 1, "DCMD M1/Control/Speed = 20.0: ")
        assert agent.link.device_deaths == 1
        assert agent.device_state("M1") == DeviceState.DEAD
        assert not any(
            m.kind == MessageType.DDATA and m.device == "M1" for m in host.messages[died_at:]
        ), "no DDATA for M1 after its DDEATH"

        # Power-cycled (registers from 0): DBIRTH with current values, then DDATA again.
        await plcs["M1"].restart()
        await plcs["M1"].set_u32(0, 9)
        await host.wait(lambda: len(host.of(MessageType.DBIRTH, "M1")) == 2, "DBIRTH of M1 again")
        rebirth = host.of(MessageType.DBIRTH, "M1")[-1]
        reborn_at = host.messages.index(rebirth)
        assert reborn_at > died_at
        assert _device_aliases(host, "M1") == m1_aliases, "same aliases after the rebirth"
        assert not any(
            m.kind == MessageType.DDATA and m.device == "M1"
            for m in host.messages[died_at:reborn_at]
        ), "no DDATA between DDEATH and DBIRTH"
        await plcs["M1"].set_u32(0, 10)
        await host.wait(
            lambda: any(m.value == 10 for m in _ddata_since(host, reborn_at, "M1", good)),
            "M1 DDATA after its DBIRTH",
        )
        await host.wait(lambda: _node_value(host, "Devices/M1/Connected") is True, "M1 back")
        assert agent.link.device_rebirths == 1
        assert host.of(MessageType.NBIRTH)[-1] is host.of(MessageType.NBIRTH)[0], "no node rebirth"
        assert _seqs_in_order(host.messages), "one seq series across NDATA, DDATA, DDEATH, DBIRTH"


async def test_scan_rate_ncmd_changes_the_poll_cadence_and_refuses_bad_values(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with plc() as m1:
        config = _config(mosquitto.port, {"M1": m1}, tmp_path / "outbox.db", poll_ms=1000)
        async with SparkplugHost(mosquitto.port) as host, EdgeAgent(config) as agent:
            await host.wait(lambda: host.of(MessageType.DBIRTH), "births")
            assert _node_value(host, SCAN_RATE) == 1000
            nbirth = host.of(MessageType.NBIRTH)[-1].metric(SCAN_RATE)
            assert (nbirth.datatype, nbirth.alias is not None) == (DataType.INT64, True)

            # Faster: 20 polls arrive within a deadline that 1 s polls could not meet.
            await _ncmd(mosquitto.port, Metric(SCAN_RATE, DataType.INT64, 20))
            await host.wait(lambda: _node_value(host, SCAN_RATE) == 20, "NDATA Scan Rate 20")
            polls = agent.devices["M1"].polls
            await wait_for(
                lambda: agent.devices["M1"].polls >= polls + 20, timeout=5, what="20 fast polls"
            )

            # Slower, by alias: three polls now take at least two intervals.
            alias = host.of(MessageType.NBIRTH)[-1].metric(SCAN_RATE).alias
            await _ncmd(mosquitto.port, Metric(None, DataType.INT64, 700, alias=alias))
            await host.wait(lambda: _node_value(host, SCAN_RATE) == 700, "NDATA Scan Rate 700")
            first = agent.devices["M1"].polls
            await wait_for(lambda: agent.devices["M1"].polls >= first + 1, what="a slow poll")
            started, base = time.monotonic(), agent.devices["M1"].polls
            await wait_for(lambda: agent.devices["M1"].polls >= base + 2, what="two slow polls")
            assert time.monotonic() - started >= 2 * 0.7 * 0.9

            # Out of range and wrong types: refused, reported, the rate unchanged.
            cases = [
                (Metric(SCAN_RATE, DataType.INT64, 5), "outside 10..3600000"),
                (Metric(SCAN_RATE, DataType.STRING, "fast"), "integer number of milliseconds"),
                (Metric(SCAN_RATE, DataType.DOUBLE, 100.0), "integer number of milliseconds"),
            ]
            for count, (metric, reason) in enumerate(cases, start=1):
                await _ncmd(mosquitto.port, metric)
                await _refused(host, count, reason)
            assert agent.scan_rate_ms == 700
            assert _node_value(host, SCAN_RATE) == 700


async def test_aliases_are_the_same_after_a_restart(
    mosquitto: Mosquitto, plcs: dict[str, Plc], tmp_path: Path
) -> None:
    config = _config(mosquitto.port, plcs, tmp_path / "outbox.db")
    births: list[dict[tuple[str | None, str], int]] = []
    async with SparkplugHost(mosquitto.port) as host:
        for run in range(2):
            start = len(host.messages)
            async with EdgeAgent(config):
                await host.wait(
                    lambda s=start: (
                        len([m for m in host.messages[s:] if m.kind == MessageType.DBIRTH]) == 2
                    ),
                    f"births of run {run}",
                )
            aliases: dict[tuple[str | None, str], int] = {}
            for message in host.messages[start:]:
                if message.kind in (MessageType.NBIRTH, MessageType.DBIRTH):
                    for metric in message.payload.metrics:
                        if metric.alias is not None and metric.name is not None:
                            aliases[(message.device, metric.name)] = metric.alias
            births.append(aliases)
    first, second = births
    node_metrics = {name for device, name in first if device is None}
    # NBIRTH: every node metric has an alias (bdSeq and Rebirth go by name).
    assert {
        REFUSED,
        LAST_REFUSAL,
        SCAN_RATE,
        "Outbox/Depth",
        "Outbox/Oldest Age",
        "Outbox/Full",
        "Devices/M1/Connected",
        "Devices/M1/Errors",
        "Devices/M1/Poll Latency",
        "Devices/M2/Connected",
    } <= node_metrics
    assert len(set(first.values())) == len(first), "aliases are unique across node and devices"
    assert len([k for k in first if k[0] == "M1"]) == 6 + len(WRITABLE_TAGS)
    assert second == first, "every alias is the same in the second run's births"


def _opcua_config(broker: int, endpoint: str, node_ids: dict[str, str], outbox: Path) -> EdgeConfig:
    """One OPC UA device, "Line", with its press's good count and a writable speed."""
    return EdgeConfig.model_validate(
        {
            "sparkplug": {"group_id": GROUP, "edge_node_id": NODE, "primary_host_id": HOST_ID},
            "mqtt": {"host": "127.0.0.1", "port": broker, "client_id": "edge-opcua-under-test"},
            "outbox": {"path": str(outbox)},
            "health": {"metrics_interval_s": 0.2},
            "devices": [
                {
                    "id": "Line",
                    "opcua": {
                        "endpoint": endpoint,
                        "publishing_interval_ms": 100,
                        "sampling_interval_ms": 50,
                        "timeout_s": 2.0,
                    },
                    "tags": [
                        {"metric": "Good", "node_id": node_ids["GoodCount"], "type": "UInt32"},
                        {
                            "metric": "Speed",
                            "node_id": node_ids["SpeedPct"],
                            "type": "UInt16",
                            "writable": True,
                            "min": 10,
                            "max": 100,
                        },
                    ],
                }
            ],
        }
    )


async def test_an_opcua_device_takes_writes_and_dies_with_its_server(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    model = LineModel(load_sim_config(CONFIG / "simulators.yaml"))
    press = model.machines[0].id
    port = free_port()
    async with SparkplugHost(mosquitto.port) as host, contextlib.AsyncExitStack() as server:
        plant = await server.enter_async_context(serve_opcua(model, port=port, controls=True))
        node_ids = {name: plant.node_id(press, name) for name in ("GoodCount", "SpeedPct")}
        config = _opcua_config(mosquitto.port, plant.endpoint, node_ids, tmp_path / "ob.db")
        async with EdgeAgent(config) as agent:
            await host.wait(lambda: host.of(MessageType.DBIRTH, "Line"), "DBIRTH")
            await wait_for(lambda: agent.devices["Line"].available, what="subscribed")
            speed = _device_aliases(host, "Line")["Speed"]

            await host.command("Line", [Metric(None, DataType.UINT16, 55, alias=speed)])
            served = plant.server.get_node(node_ids["SpeedPct"])
            await wait_for(lambda: _equals(served.read_value(), 55), what="Speed 55 on the server")
            await host.wait(
                lambda: any(m.value == 55 for m in _ddata_since(host, 0, "Line", speed)),
                "the written speed back as DDATA",
            )
            start = len(host.messages)
            await host.command("Line", [Metric("Speed", DataType.UINT16, 150)])
            await _refused(host, 1, "maximum 100")
            await host.wait(
                lambda: any(m.value == 55 for m in _ddata_since(host, start, "Line", speed)),
                "the actual speed sent back after the refusal",
            )
            assert await served.read_value() == 55

            # The server goes away: DDEATH; a write is refused because the server is away.
            await server.aclose()
            await host.wait(lambda: host.of(MessageType.DDEATH, "Line"), "DDEATH of Line")
            died_at = host.messages.index(host.of(MessageType.DDEATH, "Line")[0])
            await host.command("Line", [Metric("Speed", DataType.UINT16, 60)])
            await _refused(host, 2, "DCMD Line/Speed = 60: ")
            async with serve_opcua(model, port=port, controls=True):
                await host.wait(
                    lambda: len(host.of(MessageType.DBIRTH, "Line")) == 2,
                    "DBIRTH once the server is back",
                    timeout=20,
                )
            reborn_at = host.messages.index(host.of(MessageType.DBIRTH, "Line")[-1])
            assert not any(
                m.kind == MessageType.DDATA and m.device == "Line"
                for m in host.messages[died_at:reborn_at]
            ), "no DDATA between DDEATH and DBIRTH"
            assert _seqs_in_order(host.messages)
