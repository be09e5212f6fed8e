"""Read models: the rows the REST API and the websocket show (frozen pydantic models).

JSON form: Decimals as plain strings ("6000", "2.5"), datetimes as "2026-11-24T19:40:00.123Z".
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, PlainSerializer

from taktline_cloud.events import iso_utc
from taktline_cloud.inventory.quantities import plain

Dec = Annotated[Decimal, PlainSerializer(plain, return_type=str, when_used="json")]
UtcTime = Annotated[datetime, PlainSerializer(iso_utc, return_type=str, when_used="json")]


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready dict (Decimal as str, datetime as ISO "…Z")."""
        return self.model_dump(mode="json")


class PlantRow(_Row):
    """The plant the screen shows."""

    code: str
    name: str


class MachineRow(_Row):
    """A machine's current state and counters (latest samples)."""

    code: str
    name: str
    line: str
    state: str
    """running | idle | down | unknown"""
    online: bool
    good_count: Dec | None
    scrap_count: Dec | None
    cycle_time_ms: Dec | None
    temperature: Dec | None
    updated_at: UtcTime | None


class WorkOrderRow(_Row):
    """A work order with its booked counts, rate and projected completion."""

    number: str
    item: str
    line: str
    status: str
    quantity: Dec
    good: Dec
    scrap: Dec
    progress: Dec
    rate_per_hour: Dec | None
    rate_basis: str | None
    """measured | standard (None when no rate applies)"""
    projected_completion: UtcTime | None
    started_at: UtcTime | None
    completed_at: UtcTime | None


class StockRow(_Row):
    """On-hand of an item at an internal location."""

    item: str
    name: str
    location: str
    on_hand: Dec
    uom: str


class BalanceRow(_Row):
    """Stock of an item at a location: on hand, reserved for demands, and available."""

    item: str
    name: str
    location: str
    on_hand: Dec
    reserved: Dec
    available: Dec
    """on_hand - reserved (below zero only where a posted count took reserved stock)."""
    uom: str
    unit_cost: Dec
    """The item's moving-average cost per unit."""
    value: Dec
    """on_hand × unit_cost."""


class ReservationRow(_Row):
    """Stock of an item at a location held for a demand (a work order or a sales order line)."""

    id: int
    item: str
    location: str
    demand: str
    """A work order number (WO-1001) or a sales order line (SO-1001/1)."""
    status: str
    """open | consumed | released"""
    quantity: Dec
    open: Dec
    """Still held: counts as reserved in the balance."""
    consumed: Dec
    released: Dec
    created_at: UtcTime
    closed_at: UtcTime | None


class LedgerRow(_Row):
    """One entry of the stock ledger."""

    id: int
    at: UtcTime
    item: str
    from_location: str
    to_location: str
    quantity: Dec
    reason: str
    reference: str
    unit_cost: Dec = Decimal(0)
    """Moving-average valuation: the cost per unit the move was valued at."""
    value: Dec = Decimal(0)
    """quantity × unit_cost (0 for moves booked before valuation began)."""
    lot: str | None = None
    """The lot moved (None: stock kept without a lot)."""


class SalesOrderLineRow(_Row):
    """A sales order line with its current delivery promise."""

    order: str
    customer: str
    line: int
    item: str
    quantity: Dec
    requested_date: date
    promised_at: UtcTime | None
    promise_reason: str
    at_risk: bool


class SalesLineRow(SalesOrderLineRow):
    """A sales order line with its promise and its status: open, cancelled, or closed (shipped).

    A line that is not open is promised no more; its `promised_at` is the last promise given."""

    status: Literal["open", "cancelled", "closed"] = "open"
    cancelled_at: UtcTime | None = None


class SalesOrderRow(_Row):
    """A sales order with its lines; cancelled when every line is, open while one line is."""

    number: str
    customer: str
    created_at: UtcTime
    status: Literal["open", "cancelled", "closed"]
    lines: list[SalesLineRow]


class CustomerRow(_Row):
    """A customer sales orders may name."""

    code: str
    name: str


class ItemRow(_Row):
    """An item of the master data (what an order line or a forecast may name)."""

    sku: str
    name: str
    kind: str
    uom: str


class PromiseRow(_Row):
    """One promise given for a sales order line, when and why."""

    order: str
    line: int
    promised_at: UtcTime | None
    reason: str
    at: UtcTime
    steps: list[PromiseStepRow] = []
    """The reason chain of a capable-to-promise promise (empty for the stock/WO rule)."""


class NodeRow(_Row):
    """Online status of an edge node (device None) or of one of its devices."""

    edge_node: str
    device: str | None
    online: bool
    since: UtcTime


class Dashboard(_Row):
    """Everything the big screen shows, in one document."""

    plant: PlantRow
    generated_at: UtcTime
    machines: list[MachineRow]
    work_orders: list[WorkOrderRow]
    stock: list[StockRow]
    sales_orders: list[SalesOrderLineRow]


MAX_NODE_CHANGES = 10_000
"""The most changes one node history answer holds."""


class NodeChangeRow(_Row):
    """An edge node (device None) or one of its devices went online or offline, and for how
    long it stayed so."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    edge_node: str
    device: str | None
    """The device; null for the edge node itself."""
    online: bool
    at: UtcTime
    """When it changed (Sparkplug time: the DDEATH payload's; for births and NDEATH, when the
    cloud received them)."""
    recorded_at: UtcTime
    """When the cloud stored the change."""
    ended_at: UtcTime | None
    """The next change of the same node or device; null while this one lasts."""
    duration_s: Dec
    """Seconds from `at` to `ended_at`, or to the answer's `as_of` while it lasts (0 when the
    clocks of edge and cloud disagree and the next change looks earlier)."""

    @classmethod
    def of(
        cls,
        status: NodeRow,
        recorded_at: datetime,
        ended_at: datetime | None,
        as_of: datetime,
    ) -> NodeChangeRow:
        """The change to `status` (as of its `since`), lasting until `ended_at` or `as_of`."""
        length = (ended_at or as_of) - status.since
        micros = (length.days * 86_400 + length.seconds) * 1_000_000 + length.microseconds
        return cls(
            edge_node=status.edge_node,
            device=status.device,
            online=status.online,
            at=status.since,
            recorded_at=recorded_at,
            ended_at=ended_at,
            duration_s=Decimal(max(micros, 0)).scaleb(-6),
        )


class NodeHistory(_Row):
    """Online/offline changes of an edge node and its devices (or of one device), newest
    first."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    edge_node: str
    device: str | None
    """The device asked for; null: the node and all its devices."""
    as_of: UtcTime
    """The time the durations of the periods still open run to."""
    changes: list[NodeChangeRow]


# --- MRP (the latest run's result) ------------------------------------------------------------


class _MrpRow(_Row):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)


class MrpRunRow(_MrpRow):
    """An MRP run: what it planned from, how long it took, what it found."""

    id: int
    kind: str
    """regenerative (every item) or net-change (the changed items and what they feed)."""
    started_at: UtcTime
    finished_at: UtcTime
    duration_ms: Dec
    plan_start: date
    """The first day of bucket 1 (the run's date); bucket 0 is past due."""
    bucket_days: int
    bucket_count: int
    items: int
    items_planned: int
    planned_orders: int
    pegs: int
    exceptions: int
    beyond_horizon: int
    """Demands and receipts dated past the horizon, left out of the plan."""


class PlannedOrderRow(_MrpRow):
    """A planned order of the latest run: make (a work order) or buy (a purchase order)."""

    id: str
    item: str
    kind: str
    """make | buy"""
    quantity: Dec
    due_date: date
    """The first day of the bucket it must be received in."""
    release_date: date
    """The first day of the bucket it must be released in; past_due: before the plan start."""
    past_due: bool


class MrpExceptionRow(_MrpRow):
    """An action message of the latest run."""

    kind: str
    """expedite | defer | cancel | past-due"""
    item: str
    order: str
    """The scheduled receipt (work order) or planned order it is about."""
    bucket_date: date
    """The date of the bucket the order is in now (the day before the plan start: past due)."""
    to_date: date | None
    """Where an expedite or defer should move it."""
    quantity: Dec


class DemandSourceRow(_MrpRow):
    """An independent demand a peg serves in the end (a sales order line, safety stock …)."""

    item: str
    demand: str
    """SO-1001/1 for a sales order line; safety-stock, negative-on-hand, a work order."""
    kind: str


class PegRow(_MrpRow):
    """`quantity` of the supply serves `demand` of `item`, and through it `serves`."""

    item: str
    demand: str
    quantity: Dec
    serves: list[DemandSourceRow]


class PeggingRow(_MrpRow):
    """A supply of the latest run traced to the independent demands it serves."""

    run: int
    item: str
    supply: str
    pegs: list[PegRow]


class PromiseStepRow(_Row):
    """One link of a promise's reason chain (`sales.ctp.Step`): what, which, when, how many."""

    kind: str
    reference: str
    at: UtcTime | None
    quantity: Dec
    text: str


PromiseRow.model_rebuild()


# --- inventory: lots and cycle counts ----------------------------------------------------------


class LotRow(_Row):
    """Stock of an item at a location in one lot (lot None: what is kept without a lot)."""

    item: str
    name: str
    location: str
    lot: str | None
    on_hand: Dec
    uom: str


class CountRow(_Row):
    """A cycle count of an item at a location (optionally one lot) and its adjustment."""

    id: int
    item: str
    location: str
    lot: str | None
    counted: Dec
    book: Dec
    """The book quantity when it was counted."""
    difference: Dec
    """counted - book: what the adjustment posts (from or to the inventory location)."""
    unit_cost: Dec
    """The moving average the adjustment is valued at (as at the count)."""
    value: Dec
    """|difference| × unit_cost."""
    threshold: Dec
    """The plant's approval threshold at the count: a value above it waits for approval."""
    status: str
    """pending | posted (within the threshold) | approved | rejected"""
    counted_by: str
    counted_at: UtcTime
    decided_by: str | None
    decided_at: UtcTime | None
