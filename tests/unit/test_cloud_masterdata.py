"""Master data from plant.yaml: the demo file loads; a bad file names the file and the field."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, time
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


def bad_shift_time(data: Data) -> None:
    data["calendar"]["shifts"] = {"mon-fri": ["06:00-14:00", "14:00-25:00"]}


def overlapping_shifts(data: Data) -> None:
    data["calendar"]["shifts"] = {"mon-fri": ["06:00-14:30", "14:00-22:00"]}


def night_into_the_morning(data: Data) -> None:
    # Friday's night shift runs to 07:00 Saturday, past Saturday's 06:00 start.
    data["calendar"]["shifts"] = {"mon-fri": ["22:00-07:00"], "sat": ["06:00-14:00"]}


def day_named_twice(data: Data) -> None:
    data["calendar"]["shifts"] = {"mon-fri": ["06:00-14:00"], "fri,sat": ["06:00-14:00"]}


def unknown_weekday(data: Data) -> None:
    data["calendar"]["shifts"] = {"monday-fri": ["06:00-14:00"]}


def no_shift(data: Data) -> None:
    data["calendar"]["shifts"] = {"mon-sun": []}


def unknown_zone(data: Data) -> None:
    data["calendar"]["timezone"] = "Asia/Suzhou"


def bad_holiday(data: Data) -> None:
    data["calendar"]["holidays"] = ["2026-02-30"]


def route_on_unknown_line(data: Data) -> None:
    data["routes"]["FG-100"] = [{"line": "LINE-9"}]


def route_of_a_raw_item(data: Data) -> None:
    data["routes"]["RM-GASKET"] = [{"line": "LINE-1"}]


def route_rate_as_float(data: Data) -> None:
    data["routes"]["FG-100"] = [{"line": "LINE-1", "standard_rate_per_hour": 2160.5}]


def wo_on_a_line_not_routed(data: Data) -> None:
    data["lines"].append(
        {**data["lines"][0], "code": "LINE-2", "machines": [{"code": "M9", "name": "Press"}]}
    )
    data["work_orders"][0]["line"] = "LINE-2"


def line_holidays_without_shifts(data: Data) -> None:
    del data["calendar"]
    data["lines"][0]["calendar"] = {"holidays": ["2026-12-25"]}


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
        (bad_shift_time, "calendar.shifts", "mon-fri[1]: '25:00' is not a time of day"),
        (overlapping_shifts, "calendar.shifts", "shifts overlap: mon 06:00-14:30 runs past"),
        (night_into_the_morning, "calendar.shifts", "fri 22:00-07:00 runs past the start of sat"),
        (day_named_twice, "calendar.shifts", "fri is named twice"),
        (unknown_weekday, "calendar.shifts", "weekdays are mon, tue"),
        (no_shift, "calendar.shifts", "no shift at all"),
        (unknown_zone, "calendar.timezone", "unknown time zone 'Asia/Suzhou'"),
        (bad_holiday, "calendar.holidays[0]", ""),
        (route_on_unknown_line, "routes.FG-100[0].line", "unknown line 'LINE-9'"),
        (route_of_a_raw_item, "routes.RM-GASKET", "raw item 'RM-GASKET' is bought"),
        (route_rate_as_float, "routes.FG-100[0].standard_rate_per_hour", "write decimals"),
        (wo_on_a_line_not_routed, "work_orders[0].line", "LINE-2 does not make FG-100"),
        (line_holidays_without_shifts, "lines[0].calendar", "holidays without shifts"),
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


def test_the_demo_calendar_and_routes() -> None:
    plant = load_plant(PLANT)
    calendar = plant.line_calendar("LINE-1")
    assert calendar is not None
    assert calendar.timezone == "Asia/Shanghai"
    two = [(time(6), time(14)), (time(14), time(22))]
    assert calendar.week == dict.fromkeys(range(6), two)  # Monday to Saturday
    assert date(2027, 1, 1) in calendar.holidays
    (route,) = plant.routes["FG-100"]
    assert (route.line, route.standard_rate_per_hour) == ("LINE-1", Decimal(2160))


def test_a_line_calendar_replaces_the_shifts_and_adds_holidays(tmp_path: Path) -> None:
    def change(data: Data) -> None:
        data["calendar"]["holidays"] = ["2026-12-25"]
        data["lines"].append(
            {
                **data["lines"][0],
                "code": "LINE-2",
                "machines": [{"code": "M9", "name": "Press"}],
                "calendar": {
                    "shifts": {"mon-fri,sun": ["22:00-06:00"], "sat": ["06:00-24:00"]},
                    "holidays": ["2026-12-26"],
                },
            }
        )

    plant = load_plant(broken(tmp_path, change))
    line_2 = plant.line_calendar("LINE-2")
    assert line_2 is not None
    assert line_2.timezone == "Asia/Shanghai"  # the plant's
    assert line_2.week == {
        **{day: [(time(22), time(6))] for day in (0, 1, 2, 3, 4, 6)},
        5: [(time(6), time(0))],  # to midnight
    }
    assert line_2.holidays == (date(2026, 12, 25), date(2026, 12, 26))
    line_1 = plant.line_calendar("LINE-1")
    assert line_1 is not None
    assert line_1.holidays == (date(2026, 12, 25),)


def test_without_a_calendar_lines_work_round_the_clock(tmp_path: Path) -> None:
    plant = load_plant(broken(tmp_path, lambda data: data.pop("calendar")))
    assert plant.line_calendar("LINE-1") is None
