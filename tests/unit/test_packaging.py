"""Each component installs alone: the edge without the web stack, the cloud without PLC drivers."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

WEB_AND_DATABASE = {"fastapi", "starlette", "uvicorn", "psycopg", "psycopg-binary", "sqlalchemy"}
PLC_DRIVERS = {"pymodbus", "asyncua"}


def _lock() -> dict[str, dict[str, object]]:
    data = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    return {package["name"]: package for package in data["package"]}


def _closure(root: str) -> set[str]:
    """Runtime dependencies of `root` as locked, transitively (extras included, dev excluded)."""
    lock = _lock()
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        package = lock[name]
        deps = list(package.get("dependencies", []))  # type: ignore[call-overload]
        for extra in dict(package.get("optional-dependencies", {})).values():  # type: ignore[call-overload]
            deps.extend(extra)
        todo.extend(dep["name"] for dep in deps)
    return seen - {root}


def test_the_edge_installs_without_web_framework_or_database_driver() -> None:
    edge = _closure("taktline-edge")
    assert {"pymodbus", "aiomqtt", "taktline-contract"} <= edge
    assert not edge & (WEB_AND_DATABASE | {"taktline-cloud", "amqtt"})


def test_the_cloud_installs_without_plc_drivers() -> None:
    cloud = _closure("taktline-cloud")
    assert {"fastapi", "psycopg", "aiomqtt", "taktline-contract"} <= cloud
    assert not cloud & (PLC_DRIVERS | {"taktline-edge", "taktline-simulators"})


def test_the_contract_needs_only_protobuf() -> None:
    assert _closure("taktline-contract") == {"protobuf"}


def _imports(package_dir: Path) -> dict[str, set[str]]:
    """Top-level module names imported by each file under `package_dir`."""
    found: dict[str, set[str]] = {}
    for path in package_dir.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = names
    return found


@pytest.mark.parametrize(
    ("package_dir", "forbidden"),
    [
        ("edge/src/taktline_edge", {"taktline_cloud", "taktline_simulators", "fastapi", "psycopg"}),
        (
            "cloud/src/taktline_cloud",
            {"taktline_edge", "taktline_simulators", "pymodbus", "asyncua"},
        ),
        ("simulators/src/taktline_simulators", {"taktline_edge", "taktline_cloud", "aiomqtt"}),
        (
            "contract/src/taktline_contract",
            {"taktline_edge", "taktline_cloud", "aiomqtt", "pymodbus"},
        ),
    ],
)
def test_components_never_import_each_other(package_dir: str, forbidden: set[str]) -> None:
    offenders = {
        path: sorted(names & forbidden)
        for path, names in _imports(REPO / package_dir).items()
        if names & forbidden
    }
    assert offenders == {}


def test_only_the_drivers_import_pymodbus_and_only_the_publisher_imports_aiomqtt() -> None:
    edge = _imports(REPO / "edge/src/taktline_edge")
    assert {p for p, names in edge.items() if "pymodbus" in names} <= {
        "edge/src/taktline_edge/drivers/modbus.py"
    }
    assert {p for p, names in edge.items() if "aiomqtt" in names} <= {
        "edge/src/taktline_edge/publisher.py"
    }


def test_the_cloud_domain_imports_no_framework_driver_or_sql() -> None:
    cloud = REPO / "cloud/src/taktline_cloud"
    adapters = {"fastapi", "starlette", "uvicorn", "aiomqtt", "psycopg", "sqlite3", "pydantic"}
    for area in ("production", "sales", "inventory", "planning"):
        offenders = {
            path: sorted(names & adapters)
            for path, names in _imports(cloud / area).items()
            if names & adapters
        }
        assert offenders == {}, area
