"""The edge config: the demo file loads; every mistake names the file, line, field and problem."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from taktline_edge.cli import main
from taktline_edge.config import load_config
from taktline_edge.errors import EdgeConfigError
from taktline_edge.tags import TagType
from tests.conftest import CONFIG

DEMO = CONFIG / "edge.yaml"


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    text = DEMO.read_text()
    assert old in text, old
    path = tmp_path / "edge.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def _line_of(path: Path, fragment: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if fragment in line:
            return number
    raise AssertionError(fragment)


def test_the_demo_config_loads_with_anchors_and_merge_keys() -> None:
    config = load_config(DEMO)
    assert [d.id for d in config.devices] == ["M1", "M2", "M3"]
    assert [d.modbus.port for d in config.devices] == [5021, 5022, 5023]
    assert {d.modbus.host for d in config.devices} == {"127.0.0.1"}
    m3 = config.devices[2]
    assert m3.modbus.timeout_s == 1.0
    assert [t.metric for t in m3.tags][:2] == ["Production/GoodCount", "Production/ScrapCount"]
    temperature = m3.to_tags()[-1]
    assert temperature.type == TagType.FLOAT32
    assert temperature.deadband == Decimal("0.2")
    assert config.sparkplug.primary_host_id == "taktline-cloud"


def test_a_value_out_of_range_names_file_line_and_field(tmp_path: Path) -> None:
    path = _broken(tmp_path, "port: 5022}", "port: 70000}")
    with pytest.raises(EdgeConfigError) as caught:
        load_config(path)
    line = _line_of(path, "70000")
    assert str(caught.value) == (
        f"{path}:{line}: devices[1].modbus.port: "
        "Input should be less than or equal to 65535 (got 70000)"
    )


def test_an_unknown_key_is_an_error_at_its_line(tmp_path: Path) -> None:
    path = _broken(tmp_path, "  keepalive_s: 15\n", "  keepalive_s: 15\n  keep_alive: 30\n")
    with pytest.raises(
        EdgeConfigError,
        match=rf"^{path}:{_line_of(path, 'keep_alive')}: "
        r"mqtt\.keep_alive: unknown key$",
    ):
        load_config(path)


def test_a_missing_field_points_at_its_section(tmp_path: Path) -> None:
    path = _broken(tmp_path, "  client_id: taktline-edge-GW-1\n", "")
    with pytest.raises(
        EdgeConfigError,
        match=rf":{_line_of(path, 'host: 127.0.0.1')}: "
        r"mqtt\.client_id: required field is missing",
    ):
        load_config(path)


def test_an_error_inside_an_anchor_is_reported_where_it_is_written(tmp_path: Path) -> None:
    path = _broken(tmp_path, "type: float32", "type: float31")
    with pytest.raises(EdgeConfigError) as caught:
        load_config(path)
    line = _line_of(path, "float31")
    message = str(caught.value)
    for device in range(3):
        assert f"{path}:{line}: devices[{device}].tags[5].type: Input should be" in message
    assert "(got 'float31')" in message


def test_semantic_errors(tmp_path: Path) -> None:
    path = _broken(tmp_path, "  - id: M2", "  - id: M1")
    with pytest.raises(
        EdgeConfigError, match=r"devices: device id 'M1' is in devices\[0\] and \[1\]"
    ):
        load_config(path)
    path = _broken(tmp_path, "group_id: PLANT-1", "group_id: PLANT/1")
    with pytest.raises(
        EdgeConfigError, match=r":4: sparkplug\.group_id: must be a non-empty Sparkplug id"
    ):
        load_config(path)
    path = _broken(tmp_path, "address: 8, type: float32", "address: 65535, type: float32")
    with pytest.raises(EdgeConfigError, match="runs past register 65535"):
        load_config(path)
    path = _broken(tmp_path, "address: 2, type: uint32}", "address: 2, type: uint32, scale: 0}")
    with pytest.raises(EdgeConfigError, match=r"tags\[1\]\.scale: scale must not be 0"):
        load_config(path)
    path = _broken(tmp_path, "metric: Production/ScrapCount", "metric: Production/GoodCount")
    with pytest.raises(EdgeConfigError, match="metric 'Production/GoodCount' is in tags"):
        load_config(path)


def test_yaml_mistakes(tmp_path: Path) -> None:
    path = _broken(
        tmp_path, "  edge_node_id: GW-1\n", "  edge_node_id: GW-1\n  edge_node_id: GW-2\n"
    )
    with pytest.raises(
        EdgeConfigError,
        match=rf":{_line_of(path, 'GW-2')}: sparkplug\.edge_node_id: key appears twice",
    ):
        load_config(path)
    path = _broken(tmp_path, "devices:\n", "devices: [\n")
    with pytest.raises(EdgeConfigError, match=r"edge\.yaml:\d+: invalid YAML: "):
        load_config(path)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(EdgeConfigError, match="is empty"):
        load_config(empty)
    with pytest.raises(EdgeConfigError, match="cannot read edge config"):
        load_config(tmp_path / "missing.yaml")


def test_cli_check_accepts_the_demo_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(DEMO)]) == 0
    assert "OK (3 devices, 18 tags)" in capsys.readouterr().out


def test_cli_check_exits_2_with_the_message_and_no_traceback(tmp_path: Path) -> None:
    path = _broken(tmp_path, "port: 5022}", "port: 70000}")
    result = subprocess.run(
        [sys.executable, "-m", "taktline_edge", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{path}:{_line_of(path, '70000')}: devices[1].modbus.port" in result.stderr
    assert "Traceback" not in result.stderr


def test_endpoints_can_be_replaced_for_ephemeral_ports(tmp_path: Path) -> None:
    config = load_config(DEMO).with_endpoints(
        broker=("10.0.0.5", 18830),
        devices={"M2": ("127.0.0.1", 40123)},
        outbox_path=tmp_path / "o.db",
    )
    assert (config.mqtt.host, config.mqtt.port) == ("10.0.0.5", 18830)
    assert [d.modbus.port for d in config.devices] == [5021, 40123, 5023]
    assert config.outbox.path == tmp_path / "o.db"
    assert config.devices[1].tags == load_config(DEMO).devices[1].tags
    with pytest.raises(EdgeConfigError, match="no device"):
        config.with_endpoints(devices={"M7": ("127.0.0.1", 1)})


def test_mqtt_credentials_come_from_the_environment() -> None:
    config = load_config(DEMO)
    assert config.with_environment({}) is config
    secret = config.with_environment(
        {"TAKTLINE_EDGE_MQTT_USERNAME": "GW-1", "TAKTLINE_EDGE_MQTT_PASSWORD": "s3cret"}
    )
    assert secret.mqtt.username == "GW-1"
    assert secret.mqtt.password is not None
    assert secret.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(secret)
    with pytest.raises(EdgeConfigError, match="no MQTT username"):
        config.with_environment({"TAKTLINE_EDGE_MQTT_PASSWORD": "s3cret"})
