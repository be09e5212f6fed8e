"""Master data of a plant read from its YAML file (config/plant.yaml), validated at the boundary.

Every error names the file and the field: `config/plant.yaml: boms.FG-100[1].quantity: …`.
Quantities must be written as strings or integers so YAML never turns them into floats.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from taktline_cloud.errors import MasterDataError
from taktline_cloud.inventory.balances import allows_negative_by_default
from taktline_cloud.org.hierarchy import Level, OrgNode

LocationKind = Literal["internal", "production", "supplier", "customer", "inventory"]
ItemKind = Literal["raw", "semi_finished", "finished"]


def _no_float(value: object) -> object:
    if isinstance(value, float):
        raise ValueError('write decimals as strings (e.g. "2.5") so they stay exact')
    return value


Quantity = Annotated[Decimal, BeforeValidator(_no_float), Field(gt=0, allow_inf_nan=False)]
UnitCost = Annotated[Decimal, BeforeValidator(_no_float), Field(ge=0, allow_inf_nan=False)]
NonNegative = Annotated[Decimal, BeforeValidator(_no_float), Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[Decimal, BeforeValidator(_no_float), Field(ge=0, le=10, allow_inf_nan=False)]
LotRuleName = Literal["lot-for-lot", "fixed", "min-multiple", "periods-of-supply"]
Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S+$")]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Named(_Model):
    """A node of the organisation."""

    code: Code
    name: Name


class Organisation(_Model):
    """Group → company → plant → area (lines and machines hang below the area)."""

    group: Named
    company: Named
    plant: Named
    area: Named


class Machine(_Model):
    """A machine of a line; its code is the Sparkplug device id."""

    code: Code
    name: Name


class WorkCentre(_Model):
    """The line as a work centre, with its standard rate."""

    code: Code
    standard_rate_per_hour: Quantity


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_MINUTES = 24 * 60


def _weekdays(key: str) -> list[int]:
    """Weekdays (Monday = 0) of a key: "mon", "mon-fri", "sat,sun" or "mon-fri,sun"."""
    days: list[int] = []
    for part in key.lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ValueError(
                f"{key!r}: weekdays are {', '.join(WEEKDAYS)} (a range as mon-fri, a list as"
                " sat,sun)"
            )
        start = WEEKDAYS.index(first)
        end = WEEKDAYS.index(last) if last else start
        if end < start:
            raise ValueError(f"{key!r}: the range {part!r} runs backwards (write it as mon-fri)")
        days.extend(range(start, end + 1))
    return days


def _clock(text: str, what: str, *, end: bool) -> int:
    """Minutes after midnight of "HH:MM" ("24:00" only as an end)."""
    hours, colon, minutes = text.partition(":")
    if not (colon and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"{what}: {text!r} is not a time of day HH:MM")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > _DAY_MINUTES or (value == _DAY_MINUTES and not end):
        raise ValueError(f"{what}: {text!r} is not a time of day (00:00 to 23:59, 24:00 as end)")
    return value


def _shift(text: object, what: str) -> tuple[int, int]:
    """(start, end) minutes of "HH:MM-HH:MM"; an end not after the start is the next day's."""
    if not isinstance(text, str) or text.count("-") != 1:
        raise ValueError(f"{what}: {text!r} is not a shift HH:MM-HH:MM")
    first, last = text.split("-")
    start = _clock(first.strip(), what, end=False)
    end = _clock(last.strip(), what, end=True)
    if end <= start:
        end += _DAY_MINUTES  # runs past midnight (00:00-00:00: the whole day)
    return start, end


def _as_time(minutes: int) -> time:
    minutes %= _DAY_MINUTES
    return time(minutes // 60, minutes % 60)


def _week_minutes(shifts: dict[str, list[str]]) -> dict[int, list[tuple[int, int]]]:
    """{weekday: [(start, end) minutes]} of a shifts mapping, refusing what makes no week."""
    week: dict[int, list[tuple[int, int]]] = {}
    for key, texts in shifts.items():
        for day in _weekdays(key):
            if day in week:
                raise ValueError(f"{WEEKDAYS[day]} is named twice (in {key!r} and before)")
            week[day] = [_shift(text, f"{key}[{i}]") for i, text in enumerate(texts)]
    if not any(week.values()):
        raise ValueError("no shift at all: a calendar needs working time")
    # Every shift on one axis of minutes from Monday 00:00; the week wraps round to Monday.
    spans = sorted(
        (day * _DAY_MINUTES + start, day * _DAY_MINUTES + end, day)
        for day, day_spans in week.items()
        for start, end in day_spans
    )
    week_end = 7 * _DAY_MINUTES
    following = [*spans[1:], (spans[0][0] + week_end, 0, spans[0][2])]
    for (start, end, day), (next_start, _, next_day) in zip(spans, following, strict=True):
        if next_start < end:
            shift = f"{WEEKDAYS[day]} {_as_time(start):%H:%M}-{_as_time(end):%H:%M}"
            other = f"{WEEKDAYS[next_day]} {_as_time(next_start):%H:%M}"
            raise ValueError(f"shifts overlap: {shift} runs past the start of {other}")
    return week


class LineCalendar(_Model):
    """A line's own working week, replacing the plant's, and its extra holidays.

    `shifts`: weekdays (mon, mon-fri, sat,sun) to shifts "HH:MM-HH:MM" on the plant's wall
    clock; an end not after its start runs past midnight into the next day ("22:00-06:00"),
    "00:00-24:00" is the whole day. A shift belongs to the day it starts on, and shifts must
    not overlap (a night shift running into the next morning's shift included).
    """

    shifts: dict[str, list[str]] | None = None
    holidays: list[date] = Field(default_factory=list)

    @field_validator("shifts")
    @classmethod
    def _shifts_make_a_week(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if value is not None:
            _week_minutes(value)
        return value

    def week(self) -> dict[int, list[tuple[time, time]]] | None:
        """{weekday: [(start, end), ...]} (validated); None when no shifts are given."""
        if self.shifts is None:
            return None
        return {
            day: [(_as_time(start), _as_time(end)) for start, end in spans]
            for day, spans in _week_minutes(self.shifts).items()
        }


class PlantCalendar(LineCalendar):
    """The plant's working week, holidays and time zone (an IANA name: shifts and holidays are
    on its wall clock; every instant stored stays UTC). Lines without shifts of their own use
    its shifts; every line has its holidays."""

    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)"
            ) from error
        return value


@dataclass(frozen=True, slots=True)
class ShiftCalendar:
    """A line's resolved calendar: time zone, {weekday: [(start, end)]} and holidays."""

    timezone: str
    week: dict[int, list[tuple[time, time]]]
    holidays: tuple[date, ...]


class Line(_Model):
    """A production line: machines in flow order, the last one's good count is its output.

    `calendar`: shifts of its own (and extra holidays); left out, the plant's calendar; no
    calendar anywhere: the line works round the clock.
    """

    code: Code
    name: Name
    gateway: Code
    machines: list[Machine] = Field(min_length=1)
    work_centre: WorkCentre
    calendar: LineCalendar | None = None


class RouteSpec(_Model):
    """A line that makes an item, optionally at the item's own standard rate on that line
    (left out: the line's work-centre rate)."""

    line: Code
    standard_rate_per_hour: Quantity | None = None


class LotSizeSpec(_Model):
    """A lot-size rule and the parameters it needs (and only those).

    lot-for-lot: the net requirement; fixed: whole lots of `quantity`; min-multiple: at least
    `minimum`, rounded up to a multiple of `multiple` (0 = any); periods-of-supply: one order
    covers `periods` buckets.
    """

    rule: LotRuleName = "lot-for-lot"
    quantity: Quantity | None = None
    minimum: NonNegative | None = None
    multiple: NonNegative | None = None
    periods: int | None = Field(default=None, ge=1, le=366)

    @model_validator(mode="after")
    def _parameters_fit_the_rule(self) -> Self:
        wanted = {
            "lot-for-lot": set(),
            "fixed": {"quantity"},
            "min-multiple": {"minimum", "multiple"},
            "periods-of-supply": {"periods"},
        }[self.rule]
        fields = ("quantity", "minimum", "multiple", "periods")
        given = {f for f in fields if getattr(self, f) is not None}
        if extra := given - wanted:
            raise ValueError(f"rule {self.rule} takes no {' or '.join(sorted(extra))}")
        if wanted and not given:
            raise ValueError(f"rule {self.rule} needs {' and/or '.join(sorted(wanted))}")
        return self


class ItemPlanningSpec(_Model):
    """What MRP needs about an item; every field is optional.

    `source` left out: make when the item has a BOM, buy otherwise. Lead time is in calendar
    days (rounded up to whole buckets of the plan). `forecast`: plan the statistical forecast
    from the item's sales history, less what booked orders consume of it, as demand (off by
    default: then only the orders are planned).
    """

    lead_time_days: int = Field(default=0, ge=0, le=3650)
    safety_stock: NonNegative = Decimal(0)
    lot_size: LotSizeSpec = LotSizeSpec()
    source: Literal["make", "buy"] | None = None
    forecast: bool = False


class Item(_Model):
    """An item (stock keeping unit), with its planning data (defaults when left out)."""

    sku: Code
    name: Name
    kind: ItemKind
    uom: Code
    planning: ItemPlanningSpec = ItemPlanningSpec()


class BomEntry(_Model):
    """Quantity of a component per finished unit."""

    component: Code
    quantity: Quantity
    scrap: Fraction = Decimal(0)
    """Fraction of the component lost making the parent (0.05 = 5 % more is needed)."""


class Location(_Model):
    """A stock location; the virtual ones stand for production, suppliers, customers, counts.

    `allow_negative`: may its stock go below zero? Left out: no for internal locations, yes
    for the virtual kinds. A posted PLC count books its backflush even where it is no.
    """

    code: Code
    name: Name
    kind: LocationKind
    allow_negative: bool | None = None

    @property
    def negative_allowed(self) -> bool:
        """The setting, or the kind's default when the file leaves it out."""
        if self.allow_negative is not None:
            return self.allow_negative
        return allows_negative_by_default(self.kind)


class ProductionLocations(_Model):
    """Where lines draw components and put finished goods."""

    component_location: Code
    finished_location: Code


class OpeningStock(_Model):
    """Stock booked once, at the first load, from the inventory adjustment location (at
    `unit_cost` per unit when given: it starts the item's moving average)."""

    item: Code
    location: Code
    quantity: Quantity
    unit_cost: UnitCost | None = None


class Customer(_Model):
    """A customer."""

    code: Code
    name: Name


class SalesOrderLine(_Model):
    """A line of a demo sales order; requested date = load date + requested_in_days."""

    line: int = Field(ge=1)
    item: Code
    quantity: Quantity
    requested_in_days: int = Field(ge=0, le=3650)


class SalesOrder(_Model):
    """A demo sales order."""

    number: Code
    customer: Code
    lines: list[SalesOrderLine] = Field(min_length=1)


class WorkOrderSpec(_Model):
    """A work order the demo creates (and later starts through the service)."""

    number: Code
    item: Code
    quantity: Quantity
    line: Code


class PlanningSettings(_Model):
    """How MRP cuts time: day or week buckets from today, over `horizon_days`."""

    bucket: Literal["day", "week"] = "day"
    horizon_days: int = Field(default=56, ge=1, le=3650)

    @property
    def bucket_days(self) -> int:
        """Days per bucket."""
        return 7 if self.bucket == "week" else 1

    @property
    def bucket_count(self) -> int:
        """Buckets in the horizon (a partial last bucket counts whole)."""
        return -(-self.horizon_days // self.bucket_days)


class InventorySettings(_Model):
    """Inventory rules of the plant: a count's adjustment worth more than
    `adjustment_approval_value` (|difference| × moving average, in the plant's money) waits
    for another user's approval; 0 (the default): every adjustment with a value does."""

    adjustment_approval_value: NonNegative = Decimal(0)


class PlantData(_Model):
    """The whole plant file."""

    organisation: Organisation
    lines: list[Line] = Field(min_length=1)
    items: list[Item] = Field(min_length=1)
    boms: dict[Code, list[BomEntry]] = Field(default_factory=dict)
    locations: list[Location] = Field(min_length=1)
    production: ProductionLocations
    opening_stock: list[OpeningStock] = Field(default_factory=list)
    customers: list[Customer] = Field(default_factory=list)
    sales_orders: list[SalesOrder] = Field(default_factory=list)
    work_orders: list[WorkOrderSpec] = Field(default_factory=list)
    planning: PlanningSettings = PlanningSettings()
    calendar: PlantCalendar | None = None
    routes: dict[Code, list[RouteSpec]] = Field(default_factory=dict)
    inventory: InventorySettings = InventorySettings()

    def line_calendar(self, code: str) -> ShiftCalendar | None:
        """The line's calendar: its own shifts, else the plant's; the plant's zone, the plant's
        holidays and its own. None: no shifts anywhere, the line works round the clock."""
        line = next(line for line in self.lines if line.code == code)
        plant = self.calendar
        week = line.calendar.week() if line.calendar is not None else None
        if week is None and plant is not None:
            week = plant.week()
        if week is None:
            return None
        holidays = set(plant.holidays if plant is not None else ())
        holidays.update(line.calendar.holidays if line.calendar is not None else ())
        zone = plant.timezone if plant is not None else "UTC"
        return ShiftCalendar(zone, week, tuple(sorted(holidays)))

    def org_nodes(self) -> list[OrgNode]:
        """The equipment hierarchy, parents before children."""
        org = self.organisation
        group, company, plant, area = org.group, org.company, org.plant, org.area
        nodes = [
            OrgNode(Level.GROUP, group.code, group.name, None),
            OrgNode(Level.COMPANY, company.code, company.name, (Level.GROUP, group.code)),
            OrgNode(Level.PLANT, plant.code, plant.name, (Level.COMPANY, company.code)),
            OrgNode(Level.AREA, area.code, area.name, (Level.PLANT, plant.code)),
        ]
        for line in self.lines:
            nodes.append(OrgNode(Level.LINE, line.code, line.name, (Level.AREA, area.code)))
            nodes.extend(
                OrgNode(Level.MACHINE, m.code, m.name, (Level.LINE, line.code))
                for m in line.machines
            )
        return nodes

    def location_of_kind(self, kind: LocationKind) -> str:
        """The code of the (single) location of a virtual kind."""
        return next(loc.code for loc in self.locations if loc.kind == kind)


def _field(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def load_plant(path: Path) -> PlantData:
    """Read and validate a plant file; raise MasterDataError naming the file and the field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MasterDataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise MasterDataError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise MasterDataError(f"{path}: (top level): expected a mapping of sections")
    try:
        data = PlantData.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise MasterDataError(f"{path}: {_field(first['loc'])}: {first['msg']}{more}") from exc
    problems = list(_cross_check(data))
    if problems:
        field, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MasterDataError(f"{path}: {field}: {message}{more}")
    return data


def _duplicates(codes: Iterable[str]) -> list[str]:
    return sorted(code for code, n in Counter(codes).items() if n > 1)


def _cross_check(data: PlantData) -> Iterable[tuple[str, str]]:
    """References between sections: (field, problem) for each one that does not hold."""
    items = {item.sku for item in data.items}
    locations = {loc.code: loc.kind for loc in data.locations}
    lines = {line.code for line in data.lines}
    customers = {c.code for c in data.customers}
    machines = [m.code for line in data.lines for m in line.machines]
    for field, codes in (
        ("items", [i.sku for i in data.items]),
        ("locations", [loc.code for loc in data.locations]),
        ("lines", [line.code for line in data.lines]),
        ("lines.machines", machines),
        ("customers", [c.code for c in data.customers]),
        ("sales_orders", [so.number for so in data.sales_orders]),
        ("work_orders", [wo.number for wo in data.work_orders]),
    ):
        for code in _duplicates(codes):
            yield field, f"duplicate code {code!r}"
    for kind in ("production", "inventory"):
        count = sum(1 for k in locations.values() if k == kind)
        if count != 1:
            yield "locations", f"needs exactly one location of kind {kind!r}, found {count}"
    for parent, entries in data.boms.items():
        if parent not in items:
            yield f"boms.{parent}", f"unknown item {parent!r}"
        for i, entry in enumerate(entries):
            if entry.component not in items:
                yield f"boms.{parent}[{i}].component", f"unknown item {entry.component!r}"
            if entry.component == parent:
                yield f"boms.{parent}[{i}].component", "an item cannot be its own component"
        for code in _duplicates(e.component for e in entries):
            yield f"boms.{parent}", f"component {code!r} listed twice"
    for field in ("component_location", "finished_location"):
        code = getattr(data.production, field)
        if locations.get(code) != "internal":
            yield f"production.{field}", f"{code!r} is not an internal location"
    for i, stock in enumerate(data.opening_stock):
        if stock.item not in items:
            yield f"opening_stock[{i}].item", f"unknown item {stock.item!r}"
        if locations.get(stock.location) != "internal":
            yield f"opening_stock[{i}].location", f"{stock.location!r} is not an internal location"
    for code in _duplicates(f"{s.item} at {s.location}" for s in data.opening_stock):
        yield "opening_stock", f"{code} listed twice"
    for i, order in enumerate(data.sales_orders):
        if order.customer not in customers:
            yield f"sales_orders[{i}].customer", f"unknown customer {order.customer!r}"
        for j, line in enumerate(order.lines):
            if line.item not in items:
                yield f"sales_orders[{i}].lines[{j}].item", f"unknown item {line.item!r}"
        for number in _duplicates(str(line.line) for line in order.lines):
            yield f"sales_orders[{i}].lines", f"line {number} listed twice"
    for i, item in enumerate(data.items):
        if item.planning.source == "make" and item.kind == "raw":
            yield f"items[{i}].planning.source", f"raw item {item.sku!r} cannot be made (buy)"
    yield from _check_routes(data, items, lines)
    for i, wo in enumerate(data.work_orders):
        if wo.item not in items:
            yield f"work_orders[{i}].item", f"unknown item {wo.item!r}"
        if wo.line not in lines:
            yield f"work_orders[{i}].line", f"unknown line {wo.line!r}"
        made_on = [r.line for r in data.routes.get(wo.item, ()) if r.line in lines]
        if made_on and wo.line in lines and wo.line not in made_on:
            yield f"work_orders[{i}].line", f"{wo.line} does not make {wo.item} (routes)"
    plant_shifts = data.calendar is not None and data.calendar.shifts is not None
    for i, spec in enumerate(data.lines):
        if spec.calendar is not None and spec.calendar.shifts is None and not plant_shifts:
            yield f"lines[{i}].calendar", "holidays without shifts: give shifts here or the plant's"


def _check_routes(data: PlantData, items: set[str], lines: set[str]) -> Iterable[tuple[str, str]]:
    kinds = {item.sku: item.kind for item in data.items}
    for item, routes in data.routes.items():
        if item not in items:
            yield f"routes.{item}", f"unknown item {item!r}"
        elif kinds[item] == "raw":
            yield f"routes.{item}", f"raw item {item!r} is bought, no line makes it"
        if not routes:
            yield f"routes.{item}", "name at least one line (leave the item out: every line)"
        for j, route in enumerate(routes):
            if route.line not in lines:
                yield f"routes.{item}[{j}].line", f"unknown line {route.line!r}"
        for code in _duplicates(route.line for route in routes):
            yield f"routes.{item}", f"line {code!r} listed twice"
