"""The demo's edge config against the real simulated line: counts flow to a primary host."""

from __future__ import annotations

from pathlib import Path

import pytest

from taktline_contract.metrics import GOOD_COUNT, MACHINE_STATE, TEMPERATURE
from taktline_contract.sparkplug import DataType, MessageType
from taktline_edge.agent import EdgeAgent
from taktline_edge.config import EdgeConfig, load_config
from taktline_simulators.config import load_config as load_plant
from taktline_simulators.modbus_server import run_plant
from tests.conftest import CONFIG
from tests.edge_support import SparkplugHost, series
from tests.support import Mosquitto

pytestmark = pytest.mark.mosquitto


def _demo_edge_config(broker_port: int, endpoints: dict[str, int], outbox: Path) -> EdgeConfig:
    """config/edge.yaml with the test's broker, the simulators' bound ports and a private outbox."""
    config = load_config(CONFIG / "edge.yaml").with_endpoints(
        broker=("127.0.0.1", broker_port),
        devices={device: ("127.0.0.1", port) for device, port in endpoints.items()},
        outbox_path=outbox,
    )
    assert [d.poll_interval_ms for d in config.devices] == [200, 200, 200]
    return config


async def test_demo_line_counts_reach_the_host(mosquitto: Mosquitto, tmp_path: Path) -> None:
    plant_config = load_plant(CONFIG / "simulators.yaml")
    # Ephemeral ports, and cycles fast enough to see several parts within a second or two.
    machines = tuple(
        m.model_copy(update={"port": 0, "cycle_time_s": 0.1}) for m in plant_config.machines
    )
    plant_config = plant_config.model_copy(update={"machines": machines})
    async with run_plant(plant_config) as plant:
        ports = {machine: port for machine, (_, port) in plant.endpoints.items()}
        config = _demo_edge_config(mosquitto.port, ports, tmp_path / "outbox.db")
        host_id = config.sparkplug.primary_host_id
        async with SparkplugHost(mosquitto.port, host_id=host_id) as host, EdgeAgent(config):
            await host.wait(lambda: len(host.of(MessageType.DBIRTH)) == 3, "three DBIRTHs")
            birth = host.of(MessageType.DBIRTH, "M3")[0]
            assert birth.topic.group_id == "PLANT-1"
            assert birth.metric(GOOD_COUNT).datatype == DataType.UINT32
            assert birth.metric(TEMPERATURE).datatype == DataType.FLOAT
            assert birth.metric(MACHINE_STATE).value in (0, 1, 2)

            def counts(device: str) -> list[int]:
                samples = series(host.messages).get(device)
                if samples is None:
                    return []
                return [int(v) for n, _, v, _ in samples.samples if n == GOOD_COUNT]

            await host.wait(lambda: len(counts("M1")) >= 3, "M1 counts up", timeout=20)
            values = counts("M1")
            assert values == sorted(values), "an absolute counter only goes up"
