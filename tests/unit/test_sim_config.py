"""The simulators' config: the demo plant loads; a bad file says which file, field and why."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from taktline_simulators import SimulatorConfigError, load_config
from taktline_simulators.cli import EXIT_INVALID_CONFIG, main
from tests.conftest import CONFIG

DEMO = CONFIG / "simulators.yaml"


def demo_data() -> dict[str, Any]:
    data = yaml.safe_load(DEMO.read_text())
    assert isinstance(data, dict)
    return data


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "simulators.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_demo_plant_loads() -> None:
    config = load_config(DEMO)
    assert (config.plant, config.line) == ("PLANT-1", "LINE-1")
    assert [m.id for m in config.machines] == ["M1", "M2", "M3"]
    assert [m.port for m in config.machines] == [5021, 5022, 5023]
    assert config.machines[0].cycle_time_s == 1.6
    assert config.buffer_capacity == 8


def test_an_invalid_value_names_file_field_and_problem(tmp_path: Path) -> None:
    data = demo_data()
    data["machines"][1]["cycle_time_s"] = 0
    path = write(tmp_path, data)
    with pytest.raises(SimulatorConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: machines.1.cycle_time_s: Input should be greater than 0"


_DELETE = object()


def change(data: dict[str, Any], dotted: str, value: object) -> None:
    """Set (or delete, with `_DELETE`) the field at a dotted path such as ``machines.0.port``."""
    *parents, last = dotted.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("machines.0.port", "5021", "machines.0.port: Input should be a valid integer"),
        ("machines.0.port", 70000, "machines.0.port: Input should be less than or equal to 65535"),
        ("machines.2.scrap_rate", 1.5,
         "machines.2.scrap_rate: Input should be less than or equal to 1"),
        ("machines.0.mtbf_s", _DELETE, "machines.0.mtbf_s: Field required"),
        ("machines.0.mtbf", 3, "machines.0.mtbf: Extra inputs are not permitted"),
        ("machines.0.cycle_jitter", float("nan"),
         "machines.0.cycle_jitter: Input should be a finite number"),
        ("buffer_capacity", 0, "buffer_capacity: Input should be greater than or equal to 1"),
        ("machines", [], "machines: Tuple should have at least 1 item"),
        ("machines.2.id", "M1", "machines: duplicate machine id 'M1'"),
        ("machines.2.port", 5021,
         "machines: machine 'M3' uses 127.0.0.1:5021 like an earlier machine"),
        ("machines.0.id", "M 1", "machines.0.id: String should match pattern"),
        ("line", "LINE/1", "line: String should match pattern"),
    ],
)  # fmt: skip
def test_each_mistake_is_reported_at_its_field(
    tmp_path: Path, field: str, value: object, expected: str
) -> None:
    data = demo_data()
    change(data, field, value)
    path = write(tmp_path, data)
    with pytest.raises(SimulatorConfigError, match="^" + re.escape(f"{path}: {expected}")):
        load_config(path)


def test_every_mistake_is_listed(tmp_path: Path) -> None:
    data = demo_data()
    data["tick_ms"] = 0
    data["machines"][0]["mttr_s"] = -1
    with pytest.raises(SimulatorConfigError) as caught:
        load_config(write(tmp_path, data))
    assert str(caught.value).splitlines() == [
        f"{tmp_path / 'simulators.yaml'}: tick_ms: Input should be greater than or equal to 1",
        f"{tmp_path / 'simulators.yaml'}: machines.0.mttr_s: Input should be greater than 0",
    ]


def test_ports_zero_may_repeat(tmp_path: Path) -> None:
    data = demo_data()
    for machine in data["machines"]:
        machine["port"] = 0
    assert [m.port for m in load_config(write(tmp_path, data)).machines] == [0, 0, 0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plant: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping at the top level, got list"),
        ("", "expected a mapping at the top level, got NoneType"),
    ],
)
def test_a_file_that_is_not_a_config_mapping(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "simulators.yaml"
    path.write_text(text)
    with pytest.raises(SimulatorConfigError, match="^" + re.escape(f"{path}: {expected}")):
        load_config(path)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SimulatorConfigError, match=r"missing\.yaml: cannot read: No such file"):
        load_config(tmp_path / "missing.yaml")


def test_port_offset_and_seed_override() -> None:
    config = load_config(DEMO)
    assert [m.port for m in config.with_port_offset(100).machines] == [5121, 5122, 5123]
    assert config.with_seed(5).seed == 5
    with pytest.raises(SimulatorConfigError, match="port offset 61000 moves machine M1"):
        config.with_port_offset(61000)


def test_cli_rejects_an_invalid_config_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = demo_data()
    data["machines"][1]["cycle_time_s"] = -2
    path = write(tmp_path, data)
    assert main(["--config", str(path)]) == EXIT_INVALID_CONFIG
    err = capsys.readouterr().err
    assert err == (
        "taktline-sim: invalid configuration\n"
        f"{path}: machines.1.cycle_time_s: Input should be greater than 0\n"
    )
