"""docker-compose.yml stays valid and runs the same commands and configs the tests run.

No Docker engine runs on these machines, so the file is checked here: every service has a health
check, every app command is a console script of the component its image installs, and every
config it names validates with that component's own loader.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from taktline_cloud.settings import CloudSettings
from taktline_edge.config import load_config as load_edge_config
from taktline_simulators.config import load_config as load_sim_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    return data


def _scripts(component: str) -> set[str]:
    project = tomllib.loads((REPO / component / "pyproject.toml").read_text(encoding="utf-8"))
    return set(project["project"]["scripts"])


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"timescaledb", "mosquitto", "simulators", "edge", "cloud"}
    for name, service in services.items():
        assert service["healthcheck"]["test"], name


@pytest.mark.parametrize("component", ["simulators", "edge", "cloud"])
def test_app_services_run_their_components_console_script(
    compose: dict[str, Any], component: str
) -> None:
    service = compose["services"][component]
    assert service["build"]["args"]["COMPONENT"] == component
    assert service["command"][0] in _scripts(component)


def test_compose_configs_validate_with_the_components_loaders(compose: dict[str, Any]) -> None:
    sim_cmd = compose["services"]["simulators"]["command"]
    sims = load_sim_config(REPO / sim_cmd[sim_cmd.index("--config") + 1])
    edge_cmd = compose["services"]["edge"]["command"]
    edge = load_edge_config(REPO / edge_cmd[edge_cmd.index("--config") + 1])
    assert {m.host for m in sims.machines} == {"0.0.0.0"}
    assert {d.modbus.host for d in edge.devices} == {"simulators"}
    assert {d.modbus.port for d in edge.devices} == {m.port for m in sims.machines}
    assert edge.mqtt.host == "mosquitto"


def test_cloud_environment_names_only_real_settings(compose: dict[str, Any]) -> None:
    environment = compose["services"]["cloud"]["environment"]
    fields = {f"TAKTLINE_{name.upper()}" for name in CloudSettings.model_fields}
    assert set(environment) <= fields
    assert environment["TAKTLINE_DATABASE_URL"].startswith("postgresql://")


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name in ("mosquitto.conf", "acl"):
        assert (REPO / "config" / "mosquitto" / name).is_file()
    assert (REPO / "Dockerfile").is_file()
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert "uv sync --frozen --no-dev --package taktline-${COMPONENT}" in dockerfile
