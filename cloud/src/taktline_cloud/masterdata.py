"""Master data of a plant read from its YAML file (config/plant.yaml), validated at the boundary.

Every error names the file and the field: `config/plant.yaml: boms.FG-100[1].quantity: …`.
Quantities must be written as strings or integers so YAML never turns them into floats.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
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


class Line(_Model):
    """A production line: machines in flow order, the last one's good count is its output."""

    code: Code
    name: Name
    gateway: Code
    machines: list[Machine] = Field(min_length=1)
    work_centre: WorkCentre


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
    for i, wo in enumerate(data.work_orders):
        if wo.item not in items:
            yield f"work_orders[{i}].item", f"unknown item {wo.item!r}"
        if wo.line not in lines:
            yield f"work_orders[{i}].line", f"unknown line {wo.line!r}"
