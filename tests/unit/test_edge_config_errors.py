"""Every way an edge config can be wrong is reported with file, line and field, all at once."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pydantic
import pytest

from taktline_edge import config as config_module
from taktline_edge.config import load_config, parse_config
from taktline_edge.errors import EdgeConfigError
from tests.conftest import CONFIG

GOOD = """\
sparkplug:
  group_id: P1
  edge_node_id: GW1
  primary_host_id: HOST
mqtt:
  host: 127.0.0.1
  client_id: gw1
outbox:
  path: outbox.db
health:
  port: 0
devices:
  - id: M1
    modbus: {host: 127.0.0.1, port: 5020}
    tags:
      - {metric: Count, address: 0, type: uint32}
  - id: OVEN
    opcua:
      endpoint: opc.tcp://127.0.0.1:4840/
      username: edge
      password_env: OVEN_PASSWORD
    tags:
      - {metric: Temp, node_id: "ns=2;s=Oven.Temp", type: Double}
"""
"""A valid config touching every section; the tests below break it line by line."""


def _errors(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(EdgeConfigError) as caught:
        parse_config(text, source="edge.yaml", environ=environ)
    return str(caught.value).splitlines()


def _edit(old: str, new: str) -> str:
    assert GOOD.count(old) == 1, old
    return GOOD.replace(old, new)


def _line(text: str, fragment: str) -> int:
    (number,) = [n for n, line in enumerate(text.splitlines(), 1) if fragment in line]
    return number


def test_the_base_config_is_valid() -> None:
    config = parse_config(GOOD, environ={"OVEN_PASSWORD": "pw"})
    assert [d.id for d in config.devices] == ["M1", "OVEN"]


def test_every_model_forbids_unknown_keys() -> None:
    models = [
        cls
        for _, cls in inspect.getmembers(config_module, inspect.isclass)
        if issubclass(cls, pydantic.BaseModel) and cls.__module__ == config_module.__name__
    ]
    names = {m.__name__ for m in models}
    assert {"EdgeConfig", "HealthConfig", "OpcUaConfig", "OpcUaTagConfig", "TagConfig"} <= names
    for model in models:
        assert model.model_config.get("extra") == "forbid", model.__name__


@pytest.mark.parametrize(
    ("after", "path"),
    [
        ("  group_id: P1\n", "sparkplug.colour"),
        ("  client_id: gw1\n", "mqtt.colour"),
        ("  path: outbox.db\n", "outbox.colour"),
        ("  port: 0\n", "health.colour"),
        ("  - id: M1\n", "devices[0].colour"),
        ("      endpoint: opc.tcp://127.0.0.1:4840/\n", "devices[1].opcua.colour"),
    ],
)
def test_an_unknown_key_in_any_section_is_named_at_its_line(after: str, path: str) -> None:
    indent = after[: len(after) - len(after.lstrip(" -"))].replace("-", " ")
    text = _edit(after, f"{after}{indent}colour: red\n")
    assert _errors(text) == [f"edge.yaml:{_line(text, 'colour')}: {path}: unknown key"]


def test_unknown_keys_in_flow_mappings_of_tags_and_connections() -> None:
    text = _edit("port: 5020}", "port: 5020, colour: red}")
    text = text.replace("type: uint32}", "type: uint32, colour: red}")
    text = text.replace("type: Double}", "type: Double, colour: red}")
    assert _errors(text) == [
        f"edge.yaml:{_line(text, 'port: 5020')}: devices[0].modbus.colour: unknown key",
        f"edge.yaml:{_line(text, 'uint32')}: devices[0].tags[0].colour: unknown key",
        f"edge.yaml:{_line(text, 'Double')}: devices[1].tags[0].colour: unknown key",
    ]


def test_every_problem_is_listed_in_file_order() -> None:
    text = (
        GOOD.replace("  client_id: gw1\n", "  client_id: gw1\n  port: 0\n")
        .replace("  port: 0\ndevices", "  port: 99999\n  log_format: xml\ndevices")
        .replace("address: 0, type: uint32", "address: 0, type: uint17")
        .replace("type: Double", "type: Decimal")
        .replace("  path: outbox.db\n", "  path: outbox.db\n  when_full: explode\n")
    )
    errors = _errors(text)
    assert [re.sub(r":.*", "", e.split(": ", 1)[1]) for e in errors] == [
        "mqtt.port",
        "outbox.when_full",
        "health.port",
        "health.log_format",
        "devices[0].tags[0].type",
        "devices[1].tags[0].type",
    ]
    lines = [int(e.split(":")[1]) for e in errors]
    assert lines == sorted(lines)
    assert lines[0] == _line(text, "  port: 0")
    assert errors[2] == (
        f"edge.yaml:{_line(text, '99999')}: health.port: "
        "Input should be less than or equal to 65535 (got 99999)"
    )
    assert errors[4].startswith(
        f"edge.yaml:{_line(text, 'uint17')}: devices[0].tags[0].type: Input should be 'uint16', "
    )
    assert errors[4].endswith("(got 'uint17')")


def test_a_missing_section_and_a_missing_field() -> None:
    text = GOOD.replace("outbox:\n  path: outbox.db\n", "").replace("  client_id: gw1\n", "")
    assert _errors(text) == [
        "edge.yaml:1: outbox: required field is missing",
        f"edge.yaml:{_line(text, 'mqtt:') + 1}: mqtt.client_id: required field is missing",
    ]


def test_yaml_syntax_errors_name_line_and_column() -> None:
    text = _edit("  client_id: gw1\n", "  client_id: [gw1\n")
    (error,) = _errors(text)
    assert re.fullmatch(r"edge\.yaml:\d+: invalid YAML: .+ \(column \d+\)", error), error
    text = _edit("  host: 127.0.0.1\n", "\thost: 127.0.0.1\n")
    (error,) = _errors(text)
    assert error.startswith(f"edge.yaml:{_line(text, 'mqtt:') + 1}: invalid YAML: "), error
    assert "(column 1)" in error
    (error,) = _errors(GOOD + "---\nsecond: document\n")
    assert "invalid YAML: but found another document" in error


def test_duplicate_keys_are_errors_every_one_listed_with_the_other_problems() -> None:
    text = (
        GOOD.replace("  edge_node_id: GW1\n", "  edge_node_id: GW1\n  edge_node_id: GW2\n")
        .replace("  - id: OVEN\n", "  - id: OVEN\n    id: OVEN2\n")
        .replace("port: 5020}", "port: 5020, port: 5021}")
        .replace("  path: outbox.db\n", "  path: outbox.db\n  max_bytes: 10\n")
    )
    assert _errors(text) == [
        f"edge.yaml:{_line(text, 'GW2')}: sparkplug.edge_node_id: key appears twice"
        " (YAML would keep only the last)",
        f"edge.yaml:{_line(text, 'max_bytes')}: outbox.max_bytes: "
        "Input should be greater than or equal to 65536 (got 10)",
        f"edge.yaml:{_line(text, '5021')}: devices[0].modbus.port: key appears twice"
        " (YAML would keep only the last)",
        f"edge.yaml:{_line(text, 'OVEN2')}: devices[1].id: key appears twice"
        " (YAML would keep only the last)",
    ]


def test_a_merge_key_override_is_not_a_duplicate() -> None:
    text = _edit(
        "    modbus: {host: 127.0.0.1, port: 5020}\n",
        "    modbus: &plc {host: 127.0.0.1, port: 5020}\n",
    ).replace(
        "  - id: OVEN\n",
        "  - id: M2\n    modbus: {<<: *plc, port: 5021}\n    tags:\n"
        "      - {metric: Count, address: 0, type: uint32}\n  - id: OVEN\n",
    )
    config = parse_config(text, environ={"OVEN_PASSWORD": "pw"})
    assert config.device("M2").modbus is not None
    assert config.device("M2").modbus.port == 5021


def test_keys_are_named_as_written_not_as_yaml_reads_them() -> None:
    # YAML 1.1 reads `yes` as a boolean and `1` as a number: name the key the user wrote.
    text = GOOD.replace("health:\n", "health:\n  yes: 1\n  1: x\n  null: 2\n")
    assert _errors(text) == [
        f"edge.yaml:{_line(text, 'yes: 1')}: health.yes: unknown key",
        f"edge.yaml:{_line(text, '1: x')}: health.1: unknown key",
        f"edge.yaml:{_line(text, 'null: 2')}: health.null: unknown key",
    ]
    text = GOOD.replace("health:\n", "health:\n  ? [a, b]\n  : c\n")
    (error,) = _errors(text)
    assert error.startswith(f"edge.yaml:{_line(text, '[a, b]')}: invalid YAML: a key must be")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "edge.yaml: the edge config is empty"),
        ("# only a comment\n", "edge.yaml: the edge config is empty"),
        ("~\n", "edge.yaml:1: the edge config must be a mapping of sections"),
        ("- a\n- b\n", "edge.yaml:1: the edge config must be a mapping of sections"),
    ],
)
def test_empty_or_not_a_mapping(content: str, message: str) -> None:
    assert _errors(content) == [message]


def test_file_problems(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(EdgeConfigError, match=rf"^{missing}: cannot read edge config: no such"):
        load_config(missing)
    with pytest.raises(EdgeConfigError, match=rf"^{tmp_path}: cannot read edge config: "):
        load_config(tmp_path)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(GOOD.replace("gw1", "gw\xe91").encode("latin-1"))
    with pytest.raises(
        EdgeConfigError,
        match=rf"^{latin}:{_line(GOOD, 'client_id')}: cannot read edge config: "
        r"not UTF-8 text \(byte 0xe9\)$",
    ):
        load_config(latin)
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    broken = tmp_path / "broken.yaml"
    broken.write_text(GOOD.replace("port: 5020", "port: -1"))
    with pytest.raises(EdgeConfigError, match=rf"^{broken}:14: devices\[0\]\.modbus\.port: "):
        load_config(broken)
    assert load_config(good).mqtt.client_id == "gw1"


def test_settings_from_the_environment_are_checked_at_start() -> None:
    env = {"OVEN_PASSWORD": "pw"}
    config = parse_config(
        GOOD,
        environ={**env, "TAKTLINE_EDGE_MQTT_USERNAME": "gw1", "TAKTLINE_EDGE_MQTT_PASSWORD": "s"},
    )
    assert config.mqtt.username == "gw1"
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "s"
    assert config.device("OVEN").opcua is not None
    assert config.device("OVEN").opcua.resolved_password(env) == "pw"

    password_line = _line(GOOD, "password_env")
    assert _errors(GOOD, {}) == [
        f"edge.yaml:{password_line}: devices[1].opcua.password_env: "
        "names the environment variable OVEN_PASSWORD, which is not set"
    ]
    assert _errors(GOOD, {"OVEN_PASSWORD": "", "TAKTLINE_EDGE_MQTT_PASSWORD": "s"}) == [
        f"edge.yaml:{password_line}: devices[1].opcua.password_env: "
        "names the environment variable OVEN_PASSWORD, which is empty",
        "environment: TAKTLINE_EDGE_MQTT_PASSWORD is set but no MQTT username is"
        " (set TAKTLINE_EDGE_MQTT_USERNAME or mqtt.username)",
    ]
    assert _errors(GOOD, {**env, "TAKTLINE_EDGE_MQTT_USERNAME": ""}) == [
        "environment: TAKTLINE_EDGE_MQTT_USERNAME is set but empty"
    ]
    # A username in the file is enough for a password from the environment.
    with_user = GOOD.replace("  client_id: gw1\n", "  client_id: gw1\n  username: gw1\n")
    config = parse_config(with_user, environ={**env, "TAKTLINE_EDGE_MQTT_PASSWORD": "s"})
    assert config.mqtt.username == "gw1"
    # Without an environment (library use, e.g. the demo) only the file is checked.
    assert parse_config(GOOD).mqtt.password is None


def test_the_documented_examples_in_the_demo_config_are_valid() -> None:
    """config/edge.yaml documents optional parts as commented examples: they must stay valid."""
    lines, inside, examples = [], False, 0
    for line in (CONFIG / "edge.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# example:"):
            inside, examples = True, examples + 1
            continue
        if stripped == "# end of example":
            inside = False
            continue
        if inside:
            hash_at = line.index("#")
            line = line[:hash_at] + line[hash_at + 2 :]  # noqa: PLW2901 - uncommented
        lines.append(line)
    assert examples == 3
    config = parse_config("\n".join(lines), environ={"OVEN1_OPCUA_PASSWORD": "pw"})
    assert config.health.port == 9181
    press = config.device("PRESS-7").to_tags()
    assert {t.table.value for t in press} == {"coil", "discrete", "input", "holding"}
    assert {t.type.value for t in press} >= {"bool", "bit", "string", "int16", "uint64"}
    oven = config.device("OVEN-1")
    assert oven.opcua is not None
    assert oven.opcua.security_mode == "SignAndEncrypt"
    assert len(oven.opcua_tags()) == 3
