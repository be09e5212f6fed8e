"""Master data from plant.yaml: the demo file loads; a bad file names the file and the field."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from taktline_cloud.errors import MasterDataError
from taktline_cloud.masterdata import load_plant
from taktline_cloud.org.hierarchy import Level

Data = dict[str, Any]
PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"


def test_the_demo_plant_loads() -> None:
    plant = load_plant(PLANT)
    assert plant.organisation.plant.code == "PLANT-1"
    (line,) = plant.lines
    assert [m.code for m in line.machines] == ["M1", "M2", "M3"]
    assert line.work_centre.standard_rate_per_hour == Decimal(2160)
    sealant = next(e for e in plant.boms["FG-100"] if e.component == "RM-SEALANT")
    assert sealant.quantity == Decimal("2.5")
    assert plant.location_of_kind("production") == "VIRTUAL/PRODUCTION"
    assert plant.location_of_kind("inventory") == "VIRTUAL/INVENTORY"
    levels = [node.level for node in plant.org_nodes()]
    assert levels[:5] == [Level.GROUP, Level.COMPANY, Level.PLANT, Level.AREA, Level.LINE]
    assert levels.count(Level.MACHINE) == 3


def broken(tmp_path: Path, change: Callable[[Data], None]) -> Path:
    data = yaml.safe_load(PLANT.read_text())
    change(data)
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def set_bom_quantity(data: Data) -> None:
    data["boms"]["FG-100"][3]["quantity"] = 2.5


def unknown_component(data: Data) -> None:
    data["boms"]["FG-100"][1]["component"] = "RM-NOPE"


def negative_opening(data: Data) -> None:
    data["opening_stock"][0]["quantity"] = "-5"


def missing_lines(data: Data) -> None:
    del data["lines"]


def unknown_customer(data: Data) -> None:
    data["sales_orders"][0]["customer"] = "CUST-NOBODY"


def virtual_finished_location(data: Data) -> None:
    data["production"]["finished_location"] = "VIRTUAL/CUSTOMER"


def duplicate_machine(data: Data) -> None:
    data["lines"][0]["machines"][2]["code"] = "M1"


def misspelt_field(data: Data) -> None:
    data["work_orders"][0]["quantiy"] = data["work_orders"][0].pop("quantity")


def wo_on_unknown_line(data: Data) -> None:
    data["work_orders"][0]["line"] = "LINE-9"


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (set_bom_quantity, "boms.FG-100[3].quantity", "write decimals as strings"),
        (unknown_component, "boms.FG-100[1].component", "unknown item 'RM-NOPE'"),
        (negative_opening, "opening_stock[0].quantity", "greater than 0"),
        (missing_lines, "lines", "Field required"),
        (unknown_customer, "sales_orders[0].customer", "unknown customer 'CUST-NOBODY'"),
        (virtual_finished_location, "production.finished_location", "not an internal location"),
        (duplicate_machine, "lines.machines", "duplicate code 'M1'"),
        (misspelt_field, "work_orders[0]", ""),
        (wo_on_unknown_line, "work_orders[0].line", "unknown line 'LINE-9'"),
    ],
)
def test_invalid_file_names_file_and_field(
    tmp_path: Path, change: Callable[[Data], None], field: str, problem: str
) -> None:
    path = broken(tmp_path, change)
    with pytest.raises(MasterDataError) as raised:
        load_plant(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: {field}")
    assert problem in message


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(MasterDataError, match="cannot read"):
        load_plant(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lines: [unclosed\n")
    with pytest.raises(MasterDataError, match="not valid YAML"):
        load_plant(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(MasterDataError, match="expected a mapping"):
        load_plant(bad)
