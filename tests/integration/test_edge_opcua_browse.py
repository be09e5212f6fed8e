"""`taktline-edge browse` end to end against the simulated plant's OPC UA server (asyncua).

browse writes a config, `check` accepts it, and the edge agent runs with it against a real
Mosquitto, seen by a Sparkplug primary host; credentials, --root, --device and an unreachable
server are covered too. The same against another vendor's server: tests/interop/test_opcua_node.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest

from taktline_contract.backoff import Backoff
from taktline_contract.sparkplug import DataType, MessageType
from taktline_edge.agent import EdgeAgent
from taktline_edge.cli import main
from taktline_edge.config import EdgeConfig, load_config
from taktline_edge.drivers.opcua import OpcUaSource
from taktline_edge.outbox import Sample
from taktline_simulators.config import load_config as load_sim_config
from taktline_simulators.machine import LineModel
from taktline_simulators.opcua_server import OpcUaPlant, serve_opcua
from tests.conftest import CONFIG
from tests.edge_support import GROUP, HOST_ID, NODE, SparkplugHost
from tests.support import Mosquitto, free_port, wait_for

VARIABLES = {
    "GoodCount": "UInt32",
    "ScrapCount": "UInt32",
    "State": "UInt16",
    "CycleTimeMs": "UInt32",
    "Temperature": "Double",
}
USERS = {"operator": "s3cret"}


def _model() -> LineModel:
    return LineModel(load_sim_config(CONFIG / "simulators.yaml"))


@pytest.fixture
async def plant() -> AsyncIterator[tuple[OpcUaPlant, LineModel]]:
    model = _model()
    async with serve_opcua(model, port=free_port()) as server:
        yield server, model


async def browse(*args: str) -> int:
    """`taktline-edge browse ...` as the command line runs it (own event loop, in a thread)."""
    return await asyncio.to_thread(main, ["browse", *args])


def _for_the_test(config: EdgeConfig, broker_port: int, outbox: Path) -> EdgeConfig:
    """The browsed config with its placeholders filled in, as an engineer would edit them."""
    raw = config.model_dump()
    raw["sparkplug"] = {"group_id": GROUP, "edge_node_id": NODE, "primary_host_id": HOST_ID}
    raw["mqtt"].update(port=broker_port, client_id="edge-opcua-browse", keepalive_s=5)
    raw["outbox"]["path"] = outbox
    return EdgeConfig.model_validate(raw)


@pytest.mark.mosquitto
async def test_browse_writes_a_config_that_check_accepts_and_the_agent_runs(
    plant: tuple[OpcUaPlant, LineModel], mosquitto: Mosquitto, tmp_path: Path
) -> None:
    server, model = plant
    output = tmp_path / "edge.yaml"
    assert await browse("--endpoint", server.endpoint, "--output", str(output)) == 0
    assert main(["check", "--config", str(output)]) == 0

    config = load_config(output)
    machines = [m.id for m in model.machines]
    assert [d.id for d in config.devices] == machines
    for device in config.devices:
        assert device.opcua is not None
        assert device.opcua.endpoint == server.endpoint
        assert {t.metric: t.type for t in device.tags} == VARIABLES  # type: ignore[union-attr]
        assert {t.metric: t.node_id for t in device.tags} == {  # type: ignore[union-attr]
            name: server.node_id(device.id, name) for name in VARIABLES
        }

    # The agent runs with it: births carry every browsed metric with the server's values.
    config = _for_the_test(config, mosquitto.port, tmp_path / "outbox.db")
    async with SparkplugHost(mosquitto.port) as host, EdgeAgent(config) as agent:
        await host.wait(lambda: len(host.of(MessageType.DBIRTH)) == len(machines), "DBIRTHs")
        births = {m.device: m for m in host.of(MessageType.DBIRTH)}
        for machine in machines:
            assert {m.name for m in births[machine].payload.metrics} == set(VARIABLES)
        good = births[machines[0]].metric("GoodCount")
        assert good.datatype == DataType.UINT32
        assert good.value == model.snapshot(machines[0]).good

        # A changed count on the server reaches the host as DDATA.
        before = model.snapshot(machines[0]).good
        while model.snapshot(machines[0]).good == before:
            model.step(5.0)
        after = model.snapshot(machines[0]).good

        def counted() -> bool:
            return any(
                m.alias == good.alias and m.value == after
                for d in host.of(MessageType.DDATA, machines[0])
                for m in d.payload.metrics
            )

        await host.wait(counted, f"DDATA GoodCount {after}")
        assert all(agent.status().devices.values())


async def test_browse_with_a_username_and_a_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model()
    async with serve_opcua(model, port=free_port(), users=USERS) as server:
        output = tmp_path / "edge.yaml"
        # Anonymous is refused by this server: a clear failure, nothing written.
        assert await browse("--endpoint", server.endpoint, "--output", str(output)) == 1
        assert not output.exists()

        monkeypatch.setenv("PLC_PASSWORD", USERS["operator"])
        args = ["--endpoint", server.endpoint, "--output", str(output)]
        assert await browse(*args, "--username", "operator", "--password-env", "PLC_PASSWORD") == 0
        device = load_config(output).devices[0]
        assert device.opcua is not None
        assert (device.opcua.username, device.opcua.password_env) == ("operator", "PLC_PASSWORD")
        assert "s3cret" not in output.read_text()

        # The source, configured from it, logs in with the password from the environment.
        stored: list[Sample] = []

        async def sink(device_id: str, samples: Sequence[Sample]) -> None:
            stored.extend(samples)

        source = OpcUaSource(
            device.id,
            device.opcua,
            device.opcua_tags(),
            sink,
            password=device.opcua.resolved_password({"PLC_PASSWORD": USERS["operator"]}),
            backoff=Backoff(initial=0.1, maximum=0.5),
        )
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(source.run())
            await wait_for(lambda: len({s.metric for s in stored}) == len(VARIABLES), 15)
            task.cancel()
        assert source.status.available
        assert source.current["GoodCount"].value == model.snapshot(device.id).good


async def test_root_and_device_options(plant: tuple[OpcUaPlant, LineModel], tmp_path: Path) -> None:
    server, model = plant
    first = model.machines[0].id

    # --root: the machine's folder; its variables form one device named after it.
    one = tmp_path / "one.yaml"
    root = f"ns={server.namespace_index};s={first}"
    assert await browse("--endpoint", server.endpoint, "--root", root, "--output", str(one)) == 0
    (device,) = load_config(one).devices
    assert device.id == first
    assert {t.metric for t in device.tags} == set(VARIABLES)

    # --device: every machine in one device (one session), metrics keep the machine's name.
    line = tmp_path / "line.yaml"
    args = ["--endpoint", server.endpoint, "--device", "Line1", "--output", str(line)]
    assert await browse(*args) == 0
    (device,) = load_config(line).devices
    assert device.id == "Line1"
    assert {t.metric for t in device.tags} == {
        f"{m.id}/{name}" for m in model.machines for name in VARIABLES
    }

    # An existing file is not replaced without --force.
    before = line.read_text()
    assert await browse(*args) == 1
    assert line.read_text() == before
    assert await browse(*args, "--force") == 0


def _run_browse(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["browse", *args])
    return code, capsys.readouterr().err


def test_an_unreachable_server_fails_naming_the_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/nothing"
    output = tmp_path / "edge.yaml"
    code, err = _run_browse(["--endpoint", endpoint, "--output", str(output)], capsys)
    assert code == 1
    assert endpoint in err
    assert not output.exists()

    bad: Mapping[str, list[str]] = {
        "must look like opc.tcp://host:port": ["--endpoint", "http://plc:4840"],
        "PLC_PASSWORD_UNSET": [
            "--endpoint",
            endpoint,
            "--username",
            "u",
            "--password-env",
            "PLC_PASSWORD_UNSET",
        ],
    }
    for expected, args in bad.items():
        code, err = _run_browse([*args, "--output", str(output)], capsys)
        assert (code, expected in err) == (2, True), err
