"""The plant service: the core's one entry point for the adapters (MQTT host, REST, websockets).

Each call is one transaction: samples in, counts derived, work orders posted, stock moved,
promises re-timed, and the events that resulted handed back. The adapters call it from one
worker thread, never concurrently.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

from taktline_cloud.errors import CloudError, Conflict, Invalid, NotFound
from taktline_cloud.events import (
    MACHINE_UPDATED,
    NODE_UPDATED,
    POSTING,
    PROMISE_CHANGED,
    STOCK_UPDATED,
    WORK_ORDER_UPDATED,
    Event,
    iso_utc,
)
from taktline_cloud.historian.current import (
    UNKNOWN_STATE,
    Latest,
    LatestKey,
    as_decimal,
    merge_latest,
    newest,
    state_name,
)
from taktline_cloud.historian.samples import Sample, SampleValue
from taktline_cloud.inventory.balances import Balance
from taktline_cloud.inventory.ledger import BalanceKey, Move
from taktline_cloud.inventory.quantities import canonical, display, plain
from taktline_cloud.inventory.reservations import Reservation, SalesLineRef, parse_demand
from taktline_cloud.masterdata import PlantData, load_plant
from taktline_cloud.org.plant import ItemRef, LineRef, MachineRef, PlantModel
from taktline_cloud.planning.bom import BomLine as PlanningBomLine
from taktline_cloud.planning.bom import PlanningError
from taktline_cloud.planning.buckets import PAST_DUE, Buckets
from taktline_cloud.planning.mrp import (
    DemandKind,
    ReceiptKind,
    ScheduledReceipt,
    net_change,
    regenerate,
)
from taktline_cloud.planning_runs import (
    NET_CHANGE,
    PLANNER_LOCK,
    REGENERATIVE,
    ForecastSettings,
    StoredRun,
    affected_items,
    bom_lines,
    buckets_for,
    copy_data,
    forecast_settings,
    independent_demands,
    planning_data,
    purchase_receipts,
    run_row,
    store_plan,
)
from taktline_cloud.production.counters import checkpoint_holds, count_window
from taktline_cloud.production.posting import (
    BACKFLUSH,
    OPENING,
    RECEIPT,
    BomLine,
    Counts,
    PostingPlaces,
    plan_posting,
)
from taktline_cloud.production.rate import Rate, line_rate, time_to_make
from taktline_cloud.production.work_orders import WorkOrder, WorkOrderStatus
from taktline_cloud.purchasing.orders import PoStatus
from taktline_cloud.readmodels import (
    MAX_NODE_CHANGES,
    BalanceRow,
    Dashboard,
    DemandSourceRow,
    LedgerRow,
    MachineRow,
    MrpExceptionRow,
    MrpRunRow,
    NodeHistory,
    NodeRow,
    PeggingRow,
    PegRow,
    PlannedOrderRow,
    PlantRow,
    PromiseRow,
    ReservationRow,
    SalesOrderLineRow,
    StockRow,
    WorkOrderRow,
)
from taktline_cloud.sales import ctp
from taktline_cloud.sales.promise import (
    Demand,
    PromiseKind,
    Supply,
    promise_changed,
    promise_lines,
)
from taktline_cloud.storage import Database, Session
from taktline_cloud.storage.purchasing import PurchasingStore
from taktline_cloud.storage.session import SalesLine
from taktline_contract.metrics import (
    COUNTER_METRICS,
    CYCLE_TIME_MS,
    GOOD_COUNT,
    MACHINE_STATE,
    SCRAP_COUNT,
    TEMPERATURE,
)

log = logging.getLogger(__name__)

OPENING_REFERENCE = "OPENING"
_FIRST_WORK_ORDER = 1001
_WORK_ORDER_NUMBER = re.compile(r"^WO-(\d+)$")
_PROGRESS_STEP = Decimal("0.001")
_MAX_LEDGER_LIMIT = 10_000
_NUMBER = re.compile(r"^\S{1,64}$")
_MRP_RECEIPT_STATUSES = (
    WorkOrderStatus.RELEASED,
    WorkOrderStatus.DISPATCHED,
    WorkOrderStatus.RUNNING,
    WorkOrderStatus.HELD,
)
_CTP_PO_STATUSES = (
    PoStatus.SENT,
    PoStatus.CONFIRMED,
    PoStatus.CHANGED,
    PoStatus.PARTIALLY_RECEIVED,
)
_FINISHED = frozenset({WorkOrderStatus.COMPLETED, WorkOrderStatus.ABORTED, WorkOrderStatus.CLOSED})


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _at_risk(promised_at: datetime | None, requested: date) -> bool:
    return promised_at is None or promised_at.date() > requested


def _ceil_second(at: datetime) -> datetime:
    floor = at.replace(microsecond=0)
    return floor if floor == at else floor + timedelta(seconds=1)


_STORED_TYPES: frozenset[type] = frozenset({Decimal, bool, str})
"""Sample value types stored as they are (ints and floats become Decimal)."""


def _exact(value: object, what: str) -> SampleValue:
    """A sample value as the core stores it (numbers exact); Invalid for anything else."""
    if value is None or isinstance(value, bool | str | Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    raise Invalid(f"{what}: unsupported value type {type(value).__name__}")


def _check_sample(sample: Sample) -> Sample:
    # The common case, cheaply (every sample of every batch passes here).
    value = sample.value
    if (
        sample.timestamp.tzinfo is UTC
        and (value is None or type(value) in _STORED_TYPES)
        and sample.machine
        and sample.metric
    ):
        return sample
    what = f"sample {sample.machine}/{sample.metric}"
    if not sample.machine or not sample.metric:
        raise Invalid(f"{what}: machine and metric must not be empty")
    if sample.timestamp.tzinfo is None or sample.timestamp.utcoffset() is None:
        raise Invalid(f"{what}: timestamp {sample.timestamp.isoformat()} has no time zone")
    value = _exact(sample.value, what)
    timestamp = sample.timestamp.astimezone(UTC)
    if value is sample.value and sample.timestamp.tzinfo is UTC:
        return sample
    return Sample(sample.machine, sample.metric, timestamp, value, sample.is_historical)


def _quantity(value: object, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise Invalid(f"{what} must be an exact decimal, got {type(value).__name__}")
    quantity = Decimal(value)
    if not quantity.is_finite() or quantity <= 0:
        raise Invalid(f"{what} must be > 0, got {value}")
    return quantity


def _unit_cost(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise Invalid(f"unit cost must be an exact decimal, got {type(value).__name__}")
    cost = Decimal(value)
    if not cost.is_finite() or cost < 0:
        raise Invalid(f"unit cost must be >= 0, got {value}")
    return cost


@dataclass(frozen=True, slots=True)
class _Running:
    """A running work order with its line's current rate."""

    order: WorkOrder
    rate: Rate


@dataclass
class _Changes:
    """The events of one unit of work, and the work order rows they show."""

    now: datetime
    events: list[Event] = field(default_factory=list)
    shown: dict[str, WorkOrderRow] = field(default_factory=dict)

    def add(self, type_: str, data: dict[str, Any]) -> None:
        self.events.append(Event(type_, data, self.now))

    def work_order(self, row: WorkOrderRow) -> None:
        self.shown[row.number] = row
        self.add(WORK_ORDER_UPDATED, row.to_json())


class PlantService:
    """The cloud core: commands, sample ingestion and read models over one database."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], datetime] = _utc_now,
        rate_window: timedelta = timedelta(minutes=5),
        min_rate_window: timedelta = timedelta(seconds=20),
        promise_tolerance: timedelta = timedelta(minutes=1),
        capable_to_promise: bool = False,
    ) -> None:
        if min_rate_window <= timedelta(0) or rate_window < min_rate_window:
            raise Invalid("rate windows: need 0 < min_rate_window <= rate_window")
        self._db = db
        self._clock = clock
        self._rate_window = rate_window
        self._min_rate_window = min_rate_window
        self._promise_tolerance = promise_tolerance
        # Lines the stock/work-order rule leaves short get a capable-to-promise date (off by
        # default so the pure rule's callers keep its "not covered" answer; the app turns it on).
        self._capable_to_promise = capable_to_promise
        self._model: PlantModel | None = None
        # Work order rows as last sent, so a time-driven refresh sends only what changed.
        self._shown: dict[str, WorkOrderRow] = {}
        # Items whose remaining forecast MRP plans (plant.yaml `forecast: true`).
        self._forecasting = ForecastSettings()

    # --- time and master data ----------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise Invalid("the service clock must return an aware datetime (UTC)")
        return now.astimezone(UTC)

    def _plant(self, tx: Session) -> PlantModel | None:
        if self._model is None:
            self._model = tx.plant_model()
        return self._model

    def _require_plant(self, tx: Session) -> PlantModel:
        model = self._plant(tx)
        if model is None:
            raise Invalid("no master data loaded yet")
        return model

    def load_master_data(self, path: Path) -> list[Event]:
        """Load the plant file; loading it again changes nothing (opening stock is booked once)."""
        plant = load_plant(path)
        self._forecasting = forecast_settings(plant)
        changes = _Changes(self._now())
        now = changes.now
        places = PostingPlaces(
            production=plant.location_of_kind("production"),
            components=plant.production.component_location,
            finished=plant.production.finished_location,
        )
        plant_code = plant.organisation.plant.code
        with self._db.transaction() as tx:
            for node in plant.org_nodes():
                tx.upsert_org_node(node)
            for location in plant.locations:
                tx.upsert_location(
                    location.code,
                    location.name,
                    location.kind,
                    allow_negative=location.negative_allowed,
                )
            for item in plant.items:
                tx.upsert_item(ItemRef(item.sku, item.name, item.kind, item.uom))
            tx.upsert_plant(
                plant_code,
                plant.organisation.plant.name,
                places,
                plant.location_of_kind("inventory"),
            )
            for line in plant.lines:
                ref = LineRef(
                    line.code,
                    line.name,
                    line.gateway,
                    line.work_centre.standard_rate_per_hour,
                    tuple(MachineRef(m.code, m.name, line.code) for m in line.machines),
                )
                tx.upsert_line(plant_code, ref, line.work_centre.code)
            for parent, entries in plant.boms.items():
                tx.replace_bom(parent, [BomLine(e.component, e.quantity) for e in entries])
            self._store_planning(tx, plant)
            for customer in plant.customers:
                tx.upsert_customer(customer.code, customer.name)
            self._model = None
            model = tx.plant_model()
            if model is None:  # pragma: no cover - stored just above
                raise Invalid("master data did not load")

            opening = [
                Move(
                    s.item,
                    model.inventory_location,
                    s.location,
                    s.quantity,
                    OPENING,
                    OPENING_REFERENCE,
                    now,
                    s.unit_cost,
                )
                for s in plant.opening_stock
                if not tx.has_moves(s.item, s.location, OPENING)
            ]
            if opening:
                tx.append_moves(opening)
                self._stock_events(tx, model, _keys(opening), changes)
            for order in plant.sales_orders:
                if tx.sales_order_exists(order.number):
                    continue  # its requested dates were fixed at the first load
                lines = [
                    (
                        line.line,
                        line.item,
                        line.quantity,
                        now.date() + timedelta(days=line.requested_in_days),
                    )
                    for line in order.lines
                ]
                tx.insert_sales_order(order.number, order.customer, now, lines)
            for spec in plant.work_orders:
                if tx.work_order(spec.number) is not None:
                    continue
                wo = WorkOrder(
                    spec.number, spec.item, spec.line, spec.quantity, WorkOrderStatus.CREATED, now
                )
                tx.insert_work_order(wo)
                changes.work_order(self._wo_row(wo, None, now))
            self._promise(tx, model, self._running(tx, model, now), changes)
        self._model = model
        return self._done(changes)

    # --- samples and status --------------------------------------------------------------------

    def record_samples(self, samples: Sequence[Sample]) -> list[Event]:
        """Store samples (a known key is a no-op), derive, post, re-promise; the events."""
        batch = [_check_sample(s) for s in samples]
        if not batch:
            return []
        changes = _Changes(self._now())
        posted_items: set[str] = set()
        with self._db.transaction() as tx:
            if tx.insert_samples(batch) == 0:
                return []  # all seen before: nothing can have changed
            model = self._plant(tx)
            if model is None:
                return []
            self._update_machines(tx, model, batch, changes)
            counter_machines = {s.machine for s in batch if s.metric in COUNTER_METRICS}
            lines = {
                machine.line
                for code in counter_machines
                if (machine := model.machine(code)) is not None
            }
            if lines:
                earliest = min(s.timestamp for s in batch if s.machine in counter_machines)
                owners = [
                    wo
                    for wo in tx.work_orders(
                        (WorkOrderStatus.RUNNING, WorkOrderStatus.COMPLETED), lines, lock=True
                    )
                    # A late sample may fall in a completed order's window: it corrects it.
                    if wo.completed_at is None or wo.completed_at >= earliest
                ]
                posted = self._post_all(tx, model, owners, changes, _earliest(batch))
                posted_items.update(wo.item for wo in posted)
                running = self._running(tx, model, changes.now)
                for wo in posted:
                    current = running.get(wo.number)
                    rate = current.rate if current else None
                    changes.work_order(self._wo_row(wo, rate, changes.now))
                self._promise(tx, model, running, changes)
        if posted_items:
            self._mrp_after_posting(posted_items)
        return self._done(changes)

    def refresh(self) -> list[Event]:
        """Time-driven recompute: rates decay when a line stops, promises follow."""
        changes = _Changes(self._now())
        with self._db.transaction() as tx:
            model = self._plant(tx)
            if model is None:
                return []
            running_orders = tx.work_orders([WorkOrderStatus.RUNNING], lock=True)
            self._post_all(tx, model, running_orders, changes)
            running = self._running(tx, model, changes.now)
            for current in running.values():
                row = self._wo_row(current.order, current.rate, changes.now)
                if self._shown.get(row.number) != row:
                    changes.work_order(row)
            self._promise(tx, model, running, changes)
        return self._done(changes)

    def record_node_status(
        self, edge_node: str, device: str | None, online: bool, at: datetime
    ) -> list[Event]:
        """An edge node (device None) or one of its devices went online or offline at `at`."""
        if not edge_node:
            raise Invalid("edge node must not be empty")
        if at.tzinfo is None or at.utcoffset() is None:
            raise Invalid(f"node status time {at.isoformat()} has no time zone")
        at = at.astimezone(UTC)
        changes = _Changes(self._now())
        with self._db.transaction() as tx:
            model = self._plant(tx)
            before = self._machine_rows(tx, model) if model else {}
            known = {(n.edge_node, n.device): n for n in tx.node_statuses(edge_node)}
            changed: list[NodeRow] = []
            previous = known.get((edge_node, device))
            if previous is None or previous.online != online:
                changed.append(tx.set_node_status(edge_node, device, online, at))
            if device is None and not online:
                # A node's death takes its devices with it (Sparkplug NDEATH).
                changed += [
                    tx.set_node_status(edge_node, n.device, False, at)
                    for n in known.values()
                    if n.device is not None and n.online
                ]
            for row in changed:
                tx.append_node_change(row, changes.now)
                changes.add(NODE_UPDATED, row.to_json())
            if model is not None and changed:
                for code, machine in self._machine_rows(tx, model).items():
                    if before.get(code) != machine:
                        changes.add(MACHINE_UPDATED, machine.to_json())
        return self._done(changes)

    # --- commands ------------------------------------------------------------------------------

    def create_work_order(
        self, item: str, quantity: Decimal, line: str, number: str | None = None
    ) -> tuple[WorkOrderRow, list[Event]]:
        """Create a work order (status created); number WO-n is chosen when not given."""
        amount = _quantity(quantity, "work order quantity")
        if number is not None and not _NUMBER.match(number):
            raise Invalid(f"work order number {number!r}: 1-64 characters without spaces")
        changes = _Changes(self._now())
        with self._db.transaction() as tx:
            model = self._require_plant(tx)
            if item not in model.items:
                raise Invalid(f"unknown item {item!r}")
            if line not in model.lines:
                raise Invalid(f"unknown line {line!r}")
            number = number or _next_number(tx.work_order_numbers())
            if tx.work_order(number) is not None:
                raise Conflict(f"work order {number} already exists")
            wo = WorkOrder(number, item, line, amount, WorkOrderStatus.CREATED, changes.now)
            tx.insert_work_order(wo)
            row = self._wo_row(wo, None, changes.now)
            changes.work_order(row)
        return row, self._done(changes)

    def release_work_order(self, number: str) -> tuple[WorkOrderRow, list[Event]]:
        """created → released."""
        return self._move(number, WorkOrderStatus.RELEASED)

    def start_work_order(self, number: str) -> tuple[WorkOrderRow, list[Event]]:
        """released → running: from now on it owns its line's counts (one per line)."""
        return self._move(number, WorkOrderStatus.RUNNING)

    def complete_work_order(self, number: str) -> tuple[WorkOrderRow, list[Event]]:
        """running → completed: counts are posted up to now, then the line is free."""
        return self._move(number, WorkOrderStatus.COMPLETED)

    def _move(self, number: str, target: WorkOrderStatus) -> tuple[WorkOrderRow, list[Event]]:
        changes = _Changes(self._now())
        with self._db.transaction() as tx:
            model = self._require_plant(tx)
            wo = tx.work_order(number, lock=True)
            if wo is None:
                raise NotFound(f"no work order {number!r}")
            moved = wo.moved_to(target, changes.now)
            if target is WorkOrderStatus.RUNNING:
                _check_line_free(tx, moved)
            tx.update_work_order(moved)
            if target is WorkOrderStatus.COMPLETED:
                posted = self._post_all(tx, model, [moved], changes)
                moved = posted[0] if posted else moved
            running = self._running(tx, model, changes.now)
            current = running.get(number)
            row = self._wo_row(moved, current.rate if current else None, changes.now)
            changes.work_order(row)
            self._promise(tx, model, running, changes)
        return row, self._done(changes)

    def _done(self, changes: _Changes) -> list[Event]:
        """After the commit: remember the work order rows sent; the events."""
        self._shown.update(changes.shown)
        return changes.events

    # --- reads ---------------------------------------------------------------------------------

    def machines(self) -> list[MachineRow]:
        """Every machine's current state and counters."""
        with self._db.transaction(write=False) as tx:
            model = self._plant(tx)
            return list(self._machine_rows(tx, model).values()) if model else []

    def nodes(self) -> list[NodeRow]:
        """Online status of edge nodes and their devices."""
        with self._db.transaction(write=False) as tx:
            return tx.node_statuses()

    def work_orders(self) -> list[WorkOrderRow]:
        """Every work order, oldest first."""
        now = self._now()
        with self._db.transaction(write=False) as tx:
            return self._wo_rows(tx, tx.work_orders(), now)

    def work_order(self, number: str) -> WorkOrderRow:
        """One work order; NotFound when there is none with this number."""
        now = self._now()
        with self._db.transaction(write=False) as tx:
            wo = tx.work_order(number)
            if wo is None:
                raise NotFound(f"no work order {number!r}")
            return self._wo_rows(tx, [wo], now)[0]

    def stock(self) -> list[StockRow]:
        """On-hand per item at every internal location."""
        with self._db.transaction(write=False) as tx:
            model = self._plant(tx)
            return self._stock_rows(tx, model, None) if model else []

    def ledger(self, item: str | None = None, limit: int = 200) -> list[LedgerRow]:
        """The newest ledger entries (of one item, or all)."""
        if isinstance(limit, bool) or not 1 <= limit <= _MAX_LEDGER_LIMIT:
            raise Invalid(f"limit must be between 1 and {_MAX_LEDGER_LIMIT}, got {limit}")
        with self._db.transaction(write=False) as tx:
            return tx.ledger(item, limit)

    def balances(self, item: str | None = None, location: str | None = None) -> list[BalanceRow]:
        """On hand, reserved and available per item and location (internal locations unless
        one is asked for); NotFound for an unknown item or location."""
        with self._db.transaction(write=False) as tx:
            model = self._plant(tx)
            if model is None:
                return []
            kinds = tx.location_kinds()
            if item is not None and item not in model.items:
                raise NotFound(f"no item {item!r}")
            if location is not None and location not in kinds:
                raise NotFound(f"no location {location!r}")
            costs = tx.unit_costs()
            return [
                _balance_row(model, b, costs.get(b.item, Decimal(0)))
                for b in tx.balance_rows(item, location)
                if location is not None or kinds.get(b.location) == "internal"
            ]

    def reservations(
        self, demand: str | None = None, *, open_only: bool = True
    ) -> list[ReservationRow]:
        """Reservations (of one demand, or all), oldest first; open ones unless asked."""
        with self._db.transaction(write=False) as tx:
            return [
                _reservation_row(r) for r in tx.reservations(demand=demand, open_only=open_only)
            ]

    def reserve(
        self, item: str, location: str, demand: str, quantity: Decimal
    ) -> tuple[ReservationRow, list[Event]]:
        """Hold `quantity` of `item` at `location` for a work order (one of its components) or
        a sales order line (its item); Conflict when that much is not available."""
        amount = _quantity(quantity, "reservation quantity")
        wanted = parse_demand(demand)
        changes = _Changes(self._now())
        with self._db.transaction() as tx:
            model = self._require_plant(tx)
            if item not in model.items:
                raise Invalid(f"unknown item {item!r}")
            kind = tx.location_kinds().get(location)
            if kind is None:
                raise Invalid(f"unknown location {location!r}")
            if kind != "internal":
                raise Invalid(
                    f"{location} is a {kind} location: stock is reserved where it is kept"
                )
            _check_demand(tx, model, wanted, item)
            reservation = tx.reserve(item, location, demand, amount, changes.now)
        return _reservation_row(reservation), self._done(changes)

    def receive(
        self, item: str, location: str, quantity: Decimal, unit_cost: Decimal, reference: str
    ) -> tuple[LedgerRow, list[Event]]:
        """Book a receipt from the supplier location into a store at `unit_cost` per unit
        (it moves the item's moving average)."""
        amount = _quantity(quantity, "received quantity")
        cost = _unit_cost(unit_cost)
        if not _NUMBER.match(reference):
            raise Invalid(f"reference {reference!r}: 1-64 characters without spaces")
        changes = _Changes(self._now())
        with self._db.transaction() as tx:
            model = self._require_plant(tx)
            if item not in model.items:
                raise Invalid(f"unknown item {item!r}")
            kinds = tx.location_kinds()
            if kinds.get(location) != "internal":
                raise Invalid(f"{location!r} is not a store (an internal location)")
            suppliers = [code for code, kind in sorted(kinds.items()) if kind == "supplier"]
            if not suppliers:
                raise Conflict("the plant has no supplier location to receive from")
            move = Move(item, suppliers[0], location, amount, RECEIPT, reference, changes.now, cost)
            (row,) = tx.append_moves([move])
            self._stock_events(tx, model, _keys([move]), changes)
            # More stock: the promises made from it may move.
            self._promise(tx, model, self._running(tx, model, changes.now), changes)
        return row, self._done(changes)

    def release_reservation(self, number: int) -> tuple[ReservationRow, list[Event]]:
        """Give back what a reservation still holds (it becomes available again)."""
        changes = _Changes(self._now())
        with self._db.transaction() as tx:
            reservation = _open_reservation(tx, number)
            released = tx.release_reservation(reservation, changes.now)
        return _reservation_row(released), self._done(changes)

    def consume_reservation(
        self, number: int, quantity: Decimal | None = None
    ) -> tuple[ReservationRow, list[Event]]:
        """Turn (part of) a reservation into a stock move: to production for a work order, to
        the customer location for a sales order line. All that is open unless `quantity`."""
        changes = _Changes(self._now())
        with self._db.transaction() as tx:
            model = self._require_plant(tx)
            reservation = _open_reservation(tx, number)
            amount = reservation.open
            if quantity is not None:
                amount = _quantity(quantity, "consumed quantity")
            if amount > reservation.open:
                raise Conflict(
                    f"reservation {number} holds {display(reservation.open)} of"
                    f" {reservation.item}, {display(amount)} requested"
                )
            target = model.places.production
            if isinstance(parse_demand(reservation.demand), SalesLineRef):
                customers = [c for c, k in sorted(tx.location_kinds().items()) if k == "customer"]
                if not customers:
                    raise Conflict("the plant has no customer location to ship to")
                target = customers[0]
            consumed, row = tx.consume_reservation(reservation, amount, target, changes.now)
            self._stock_events(
                tx, model, {(row.item, row.from_location), (row.item, row.to_location)}, changes
            )
            # Stock left a store: the promises made from it may move.
            self._promise(tx, model, self._running(tx, model, changes.now), changes)
        return _reservation_row(consumed), self._done(changes)

    def sales_orders(self) -> list[SalesOrderLineRow]:
        """Every sales order line with its current promise."""
        with self._db.transaction(write=False) as tx:
            return [_sales_row(line) for line in tx.sales_lines()]

    def promise_history(self, order: str, line: int) -> list[PromiseRow]:
        """Every promise given for a sales order line, oldest first."""
        with self._db.transaction(write=False) as tx:
            history = tx.promise_history(order, line)
        if history is None:
            raise NotFound(f"no sales order line {order}/{line}")
        return history

    def dashboard(self) -> Dashboard:
        """Everything the big screen shows."""
        now = self._now()
        with self._db.transaction(write=False) as tx:
            model = self._require_plant(tx)
            orders = [wo for wo in tx.work_orders() if wo.status is not WorkOrderStatus.CLOSED]
            return Dashboard(
                plant=PlantRow(code=model.code, name=model.name),
                generated_at=now,
                machines=list(self._machine_rows(tx, model).values()),
                work_orders=self._wo_rows(tx, orders, now),
                stock=self._stock_rows(tx, model, None),
                sales_orders=[_sales_row(line) for line in tx.sales_lines()],
            )

    # --- derivation ----------------------------------------------------------------------------

    def _machine_rows(
        self, tx: Session, model: PlantModel, codes: Iterable[str] | None = None
    ) -> dict[str, MachineRow]:
        wanted = None if codes is None else set(codes)
        machines = [m for m in model.machines if wanted is None or m.code in wanted]
        latest = tx.latest_values([m.code for m in machines])
        online = {(n.edge_node, n.device): n.online for n in tx.node_statuses()}
        rows: dict[str, MachineRow] = {}
        for machine in machines:
            values = {metric: v for (code, metric), v in latest.items() if code == machine.code}
            state = values.get(MACHINE_STATE)
            rows[machine.code] = MachineRow(
                code=machine.code,
                name=machine.name,
                line=machine.line,
                state=state_name(state.value) if state else UNKNOWN_STATE,
                online=online.get((model.lines[machine.line].gateway, machine.code), False),
                good_count=_number(values, GOOD_COUNT),
                scrap_count=_number(values, SCRAP_COUNT),
                cycle_time_ms=_number(values, CYCLE_TIME_MS),
                temperature=_number(values, TEMPERATURE),
                updated_at=max((v.timestamp for v in values.values()), default=None),
            )
        return rows

    def _update_machines(
        self, tx: Session, model: PlantModel, batch: Sequence[Sample], changes: _Changes
    ) -> None:
        codes = {s.machine for s in batch if model.machine(s.machine) is not None}
        if not codes:
            return
        incoming = newest(s for s in batch if s.machine in codes)
        newer = merge_latest(tx.latest_values(codes), incoming)
        if not newer:
            return
        touched = {machine for machine, _ in newer}
        before = self._machine_rows(tx, model, touched)
        tx.store_latest(newer)
        for code, row in self._machine_rows(tx, model, touched).items():
            # A newer timestamp with the same values (a rebirth) is not a change worth sending.
            if before[code].model_copy(update={"updated_at": None}) != row.model_copy(
                update={"updated_at": None}
            ):
                changes.add(MACHINE_UPDATED, row.to_json())

    def _post_all(
        self,
        tx: Session,
        model: PlantModel,
        orders: Iterable[WorkOrder],
        changes: _Changes,
        arrived: Mapping[LatestKey, datetime] | None = None,
    ) -> list[WorkOrder]:
        """Post each order's counts; the orders that booked something.

        `arrived`: the earliest new reading per (machine, metric) in this unit of work.
        """
        posted: list[WorkOrder] = []
        stock_keys: set[BalanceKey] = set()
        for wo in orders:
            booked, moves = self._post(tx, model, wo, changes, arrived or {})
            if booked is not None:
                posted.append(booked)
                stock_keys |= _keys(moves)
        self._stock_events(tx, model, stock_keys, changes)
        return posted

    def _post(
        self,
        tx: Session,
        model: PlantModel,
        wo: WorkOrder,
        changes: _Changes,
        arrived: Mapping[LatestKey, datetime],
    ) -> tuple[WorkOrder | None, list[Move]]:
        """Book what the series says the order made minus what is booked already."""
        line = model.lines.get(wo.line)
        if wo.started_at is None or line is None:
            return None, []
        good = self._count(tx, wo, line.output_machine, GOOD_COUNT, arrived)
        scrap = sum(
            (self._count(tx, wo, m.code, SCRAP_COUNT, arrived) for m in line.machines),
            Decimal(0),
        )
        posting = plan_posting(
            work_order=wo.number,
            item=wo.item,
            produced=Counts(good, scrap),
            booked=Counts(wo.good, wo.scrap),
            bom=model.boms.get(wo.item, ()),
            places=model.places,
        )
        if posting.empty:
            return None, []
        # Good parts are received at what their components cost now (a reversal takes them
        # back out at the average, like any other issue).
        costs = tx.unit_costs()
        made_at = sum(
            (
                line.quantity * costs.get(line.component, Decimal(0))
                for line in model.boms.get(wo.item, ())
            ),
            Decimal(0),
        )
        moves = [
            Move.planned(
                planned,
                wo.number,
                changes.now,
                made_at if planned.reason == RECEIPT else None,
            )
            for planned in posting.moves
        ]
        # The backflush uses up what was reserved for this order (a reversal gives stock back
        # but reserves nothing again). Reservations before balances: every writer locks in
        # that order, so none waits for another in a cycle.
        for move in moves:
            if move.reason == BACKFLUSH:
                tx.draw_reservations(
                    move.item, move.from_location, wo.number, move.quantity, changes.now
                )
        # A count is a fact: the line used the material whatever the books say, so it is
        # booked even where it takes a store below zero (a lost count would be worse). The
        # posting names the shortages it caused, for a count or a receipt to put right.
        ledger = tx.append_moves(moves, book_shortage=True)
        booked = wo.booked(good, scrap)
        tx.update_work_order(booked)
        negative_allowed = tx.negative_allowed()
        shortages = [
            {"item": b.item, "location": b.location, "on_hand": plain(b.on_hand)}
            for b in (
                tx.balance(item, location)
                for item, location in sorted({(m.item, m.from_location) for m in moves})
                if not negative_allowed.get(location, False)
            )
            if b.on_hand < 0
        ]
        data: dict[str, Any] = {
            "work_order": wo.number,
            "good_delta": plain(posting.good_delta),
            "scrap_delta": plain(posting.scrap_delta),
            "moves": [row.to_json() for row in ledger],
        }
        if shortages:
            data["shortages"] = shortages
        changes.add(POSTING, data)
        return booked, moves

    def _count(
        self,
        tx: Session,
        wo: WorkOrder,
        machine: str,
        metric: str,
        arrived: Mapping[LatestKey, datetime],
    ) -> Decimal:
        """Parts on one counter in the order's window, resumed from its checkpoint if it holds."""
        assert wo.started_at is not None  # only started orders are posted
        # A running order has no end yet: everything its line makes after its start is its
        # output, even a sample stamped slightly ahead of this clock by the gateway's clock.
        start, end = wo.started_at, wo.completed_at
        checkpoint = tx.checkpoint(wo.number, machine, metric)
        if checkpoint is not None and not checkpoint_holds(
            checkpoint, end, arrived.get((machine, metric))
        ):
            checkpoint = None
        origin = checkpoint.through if checkpoint else start
        points = tx.counter_series(machine, metric, origin, end)
        total, following = count_window(points, start, end, checkpoint)
        if following is not None and following != checkpoint:
            tx.save_checkpoint(wo.number, machine, metric, following)
        return total

    def _rate(self, tx: Session, model: PlantModel, wo: WorkOrder, now: datetime) -> Rate:
        line = model.lines[wo.line]
        assert wo.started_at is not None  # running orders have started
        window_start = max(now - self._rate_window, wo.started_at)
        output = tx.counter_series(line.output_machine, GOOD_COUNT, window_start, now)
        return line_rate(
            output,
            started_at=wo.started_at,
            now=now,
            standard_per_hour=line.standard_rate_per_hour,
            rate_window=self._rate_window,
            min_rate_window=self._min_rate_window,
        )

    def _running(self, tx: Session, model: PlantModel, now: datetime) -> dict[str, _Running]:
        return {
            wo.number: _Running(wo, self._rate(tx, model, wo, now))
            for wo in tx.work_orders([WorkOrderStatus.RUNNING])
            if wo.line in model.lines and wo.started_at is not None
        }

    def _wo_row(self, wo: WorkOrder, rate: Rate | None, now: datetime) -> WorkOrderRow:
        running = wo.status is WorkOrderStatus.RUNNING and rate is not None
        projected = None
        if running and rate is not None and rate.per_hour > 0:
            projected = _ceil_second(now + time_to_make(wo.remaining, rate.per_hour))
        progress = (wo.good / wo.quantity).quantize(_PROGRESS_STEP, rounding=ROUND_DOWN)
        return WorkOrderRow(
            number=wo.number,
            item=wo.item,
            line=wo.line,
            status=str(wo.status),
            quantity=canonical(wo.quantity),
            good=canonical(wo.good),
            scrap=canonical(wo.scrap),
            progress=canonical(progress),
            rate_per_hour=canonical(rate.per_hour) if running and rate else None,
            rate_basis=str(rate.basis) if running and rate else None,
            projected_completion=projected,
            started_at=wo.started_at,
            completed_at=wo.completed_at,
        )

    def _wo_rows(
        self, tx: Session, orders: Sequence[WorkOrder], now: datetime
    ) -> list[WorkOrderRow]:
        model = self._plant(tx)
        rows = []
        for wo in orders:
            rate = None
            if (
                model is not None
                and wo.status is WorkOrderStatus.RUNNING
                and wo.started_at is not None
                and wo.line in model.lines
            ):
                rate = self._rate(tx, model, wo, now)
            rows.append(self._wo_row(wo, rate, now))
        return rows

    def _stock_rows(
        self, tx: Session, model: PlantModel, keys: Iterable[BalanceKey] | None
    ) -> list[StockRow]:
        kinds = tx.location_kinds()
        balances = tx.balances()
        wanted = balances.keys() if keys is None else keys
        rows = [
            StockRow(
                item=item,
                name=model.items[item].name if item in model.items else item,
                location=location,
                on_hand=canonical(balances.get((item, location), Decimal(0))),
                uom=model.items[item].uom if item in model.items else "",
            )
            for item, location in wanted
            if kinds.get(location) == "internal"
        ]
        return sorted(rows, key=lambda r: (r.location, r.item))

    def _stock_events(
        self, tx: Session, model: PlantModel, keys: Iterable[BalanceKey], changes: _Changes
    ) -> None:
        keys = list(keys)
        if keys:
            for row in self._stock_rows(tx, model, keys):
                changes.add(STOCK_UPDATED, row.to_json())

    def _promise(
        self, tx: Session, model: PlantModel, running: dict[str, _Running], changes: _Changes
    ) -> None:
        """Re-promise every open line; store and announce only the promises that changed."""
        by_item: dict[str, list[SalesLine]] = {}
        for line in tx.sales_lines(open_only=True):
            by_item.setdefault(line.item, []).append(line)
        now = changes.now
        short: dict[str, list[SalesLine]] = {}  # lines the rule leaves short, by item
        kept: dict[str, Decimal] = {}  # finished stock the rule's covered lines take, by item
        for item, lines in by_item.items():
            supplies = [
                Supply(
                    r.order.number,
                    r.order.line,
                    r.order.quantity,
                    r.order.good,
                    r.rate.per_hour,
                    str(r.rate.basis),
                )
                for r in running.values()
                if r.order.item == item
            ]
            demands = [
                Demand(line.order, line.line, line.quantity, line.requested_date) for line in lines
            ]
            promises = promise_lines(
                demands,
                tx.on_hand(item, model.places.finished),
                supplies,
                now,
            )
            stored = {(line.order, line.line): line for line in lines}
            if self._capable_to_promise:
                covered = [p for p in promises if p.kind is not PromiseKind.SHORT]
                short[item] = [stored[(p.order, p.line)] for p in promises if p not in covered]
                kept[item] = sum((stored[(p.order, p.line)].quantity for p in covered), Decimal(0))
                promises = covered
            for promise in promises:
                line = stored[(promise.order, promise.line)]
                tolerance = self._promise_tolerance
                if not promise_changed(line.promised_at, line.promise_kind, promise, tolerance):
                    continue
                tx.record_promise(
                    promise.order,
                    promise.line,
                    promised_at=promise.promised_at,
                    kind=str(promise.kind),
                    reason=promise.reason,
                    at=now,
                )
                row = _sales_row(line).model_copy(
                    update={
                        "promised_at": promise.promised_at,
                        "promise_reason": promise.reason,
                        "at_risk": promise.at_risk,
                    }
                )
                previous = iso_utc(line.promised_at) if line.promised_at else None
                changes.add(PROMISE_CHANGED, {**row.to_json(), "previous_promised_at": previous})
        if any(short.values()):
            self._capable(tx, model, running, changes, short=short, kept=kept)

    # --- node history --------------------------------------------------------------------------

    def node_history(
        self,
        edge_node: str,
        device: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> NodeHistory:
        """Online/offline changes of an edge node and its devices (or one device) with their
        time in [since, until), newest first, each with how long it lasted (the open one: up to
        now). Invalid for bad arguments; NotFound for a node or device never seen."""
        if not edge_node:
            raise Invalid("edge node must not be empty")
        if device is not None and not device:
            raise Invalid("device must not be empty (leave it out for the node and its devices)")
        for name, bound in (("since", since), ("until", until)):
            if bound is not None and (bound.tzinfo is None or bound.utcoffset() is None):
                raise Invalid(f"{name}: {bound.isoformat()} has no time zone (add Z or an offset)")
        if since is not None and until is not None and since >= until:
            raise Invalid(f"since ({iso_utc(since)}) must be before until ({iso_utc(until)})")
        if isinstance(limit, bool) or not 1 <= limit <= MAX_NODE_CHANGES:
            raise Invalid(f"limit must be between 1 and {MAX_NODE_CHANGES}, got {limit}")
        as_of = self._now()
        with self._db.transaction(write=False) as tx:
            if not tx.node_known(edge_node):
                raise NotFound(f"no edge node {edge_node!r}")
            if device is not None and not tx.node_known(edge_node, device):
                raise NotFound(f"no device {device!r} on edge node {edge_node!r}")
            changes = tx.node_changes(
                edge_node,
                device=device,
                since=since.astimezone(UTC) if since is not None else None,
                until=until.astimezone(UTC) if until is not None else None,
                limit=limit,
                as_of=as_of,
            )
        return NodeHistory(edge_node=edge_node, device=device, as_of=as_of, changes=changes)

    # --- MRP -----------------------------------------------------------------------------------

    _mrp_last: StoredRun | None = None
    """The latest run this service made (a net-change run goes on from it)."""

    def _store_planning(self, tx: Session, plant: PlantData) -> None:
        """Item planning data, BOM scrap and MRP buckets from the plant file (idempotent)."""
        boms = plant.boms
        for item in plant.items:
            spec = item.planning
            lot = spec.lot_size
            source = spec.source or ("make" if boms.get(item.sku) else "buy")
            tx.upsert_item_planning(
                item.sku,
                lead_time_days=spec.lead_time_days,
                safety_stock=spec.safety_stock,
                lot_rule=lot.rule,
                lot_quantity=lot.quantity,
                lot_minimum=lot.minimum,
                lot_multiple=lot.multiple,
                lot_periods=lot.periods,
                source=source,
            )
        for parent, entries in boms.items():
            for entry in entries:
                tx.set_bom_scrap(parent, entry.component, entry.scrap)
        settings = plant.planning
        tx.set_mrp_settings(
            plant.organisation.plant.code, settings.bucket_days, settings.horizon_days
        )

    def _mrp_receipts(
        self, tx: Session, model: PlantModel, now: datetime
    ) -> list[ScheduledReceipt]:
        """Open work orders' remaining quantity at their projected completion: a running one at
        its line's measured rate, one not running (yet, created ones included: an approved make
        order) at the line's standard rate from now; and open purchase order lines."""
        receipts = []
        for wo in tx.work_orders((WorkOrderStatus.CREATED, *_MRP_RECEIPT_STATUSES)):
            line = model.lines.get(wo.line)
            if line is None or wo.remaining <= 0:
                continue
            per_hour = line.standard_rate_per_hour
            if wo.status is WorkOrderStatus.RUNNING and wo.started_at is not None:
                measured = self._rate(tx, model, wo, now).per_hour
                if measured > 0:
                    per_hour = measured
            due = now + time_to_make(wo.remaining, per_hour)
            receipts.append(
                ScheduledReceipt(
                    wo.number, wo.item, due.date(), wo.remaining, ReceiptKind.WORK_ORDER
                )
            )
        receipts.extend(purchase_receipts(tx, model.items))
        return receipts

    def _mrp_buckets(self, tx: Session, model: PlantModel, now: datetime) -> Buckets:
        bucket_days, horizon_days = tx.mrp_settings(model.code)
        return buckets_for(now.date(), bucket_days, horizon_days)

    def _lock_planner(self, tx: Session) -> None:
        if not tx.take_planner_lock(PLANNER_LOCK):
            raise Conflict("an MRP run is in progress; try again when it has finished")

    def run_mrp(self) -> tuple[MrpRunRow, list[Event]]:
        """A regenerative MRP run on the plant's data now; it replaces the latest result.

        One transaction holds the planner lock (Conflict when another run holds it), reads the
        inputs, plans and stores, so the result is the plan of the data it read.
        """
        started_clock = time.perf_counter()
        now = self._now()
        with self._db.transaction() as tx:
            self._lock_planner(tx)
            model = self._require_plant(tx)
            buckets = self._mrp_buckets(tx, model, now)
            receipts = self._mrp_receipts(tx, model, now)
            data = planning_data(tx, model, buckets, receipts, forecasting=self._forecasting)
            try:
                plan = regenerate(data)
            except PlanningError as exc:
                raise Invalid(f"MRP cannot plan: {exc}") from exc
            stored = store_plan(
                tx, plan, data, kind=REGENERATIVE, started_at=now, started_clock=started_clock
            )
        self._mrp_last = stored
        return stored.row, []

    def _mrp_net_change(self, items: Iterable[str]) -> MrpRunRow | None:
        """After a posting: re-plan the items it changed if this service holds the latest plan
        and the buckets still fit (same day); otherwise nothing (the next run sees it all)."""
        last = self._mrp_last
        if last is None:
            return None
        started_clock = time.perf_counter()
        now = self._now()
        with self._db.transaction() as tx:
            if not tx.take_planner_lock(PLANNER_LOCK):
                return None  # a run in progress plans from the data as it finds it
            model = self._require_plant(tx)
            latest = tx.mrp_run()
            if latest is None or int(latest[0]) != last.row.id:
                return None  # another process planned since: its plan is not in memory here
            buckets = self._mrp_buckets(tx, model, now)
            if buckets != last.data.buckets:
                return None
            changed = sorted(affected_items(model, items) & set(last.data.items))
            receipts = self._mrp_receipts(tx, model, now)
            available = tx.available_by_item()
            # A count moves its work order's remaining quantity, and so its components' demand.
            # The forecast stays as the last run made it: no model is fitted on a posting.
            demands = independent_demands(tx, model, buckets, bom_lines(tx, model))
            data = copy_data(last.data)
            for item in changed:
                data.set_on_hand(item, available.get(item, Decimal(0)))
                data.set_receipts(item, [r for r in receipts if r.item == item])
                mine = [d for d in demands if d.item == item]
                data.set_demands(item, mine, keep={DemandKind.FORECAST})
            plan = net_change(last.plan, data, changed)
            stored = store_plan(
                tx, plan, data, kind=NET_CHANGE, started_at=now, started_clock=started_clock
            )
        self._mrp_last = stored
        return stored.row

    def _mrp_after_posting(self, items: Iterable[str]) -> None:
        """The net-change hook of a posted count: the posting is committed whatever MRP does."""
        try:
            self._mrp_net_change(items)
        except (CloudError, PlanningError):
            log.exception("net-change MRP after a posting failed; the next run re-plans")

    def mrp_latest_run(self) -> MrpRunRow:
        """The latest run's summary; NotFound before the first run."""
        with self._db.transaction(write=False) as tx:
            stored = tx.mrp_run()
        if stored is None:
            raise NotFound("no MRP run yet: POST /api/mrp/runs to plan")
        return run_row(stored)

    def _require_mrp_run(self, tx: Session) -> None:
        if tx.mrp_run() is None:
            raise NotFound("no MRP run yet: POST /api/mrp/runs to plan")

    def _check_mrp_item(self, tx: Session, item: str | None) -> None:
        if item is not None and item not in self._require_plant(tx).items:
            raise NotFound(f"no item {item!r}")

    def mrp_planned_orders(
        self, item: str | None = None, kind: str | None = None
    ) -> list[PlannedOrderRow]:
        """The latest run's planned orders (of one item, make or buy), by item and due date."""
        if kind is not None and kind not in ("make", "buy"):
            raise Invalid(f"kind must be make or buy, got {kind!r}")
        with self._db.transaction(write=False) as tx:
            self._check_mrp_item(tx, item)
            self._require_mrp_run(tx)
            rows = tx.mrp_planned_orders(item, kind)
        return [
            PlannedOrderRow(
                id=order_id,
                item=order_item,
                kind=source,
                quantity=canonical(quantity),
                due_date=due_date,
                release_date=release_date,
                past_due=release == PAST_DUE,
            )
            for order_id, order_item, source, quantity, _, release, due_date, release_date in rows
        ]

    def mrp_exceptions(self, item: str | None = None) -> list[MrpExceptionRow]:
        """The latest run's action messages (of one item), by item in the run's order."""
        with self._db.transaction(write=False) as tx:
            self._check_mrp_item(tx, item)
            self._require_mrp_run(tx)
            rows = tx.mrp_exceptions(item)
        return [
            MrpExceptionRow(
                kind=kind,
                item=row_item,
                order=order,
                bucket_date=bucket_date,
                to_date=to_date,
                quantity=canonical(quantity),
            )
            for kind, row_item, order, _, bucket_date, _, to_date, quantity in rows
        ]

    def mrp_pegging(self, supply: str, item: str | None = None) -> PeggingRow:
        """What one supply of the latest run (a planned order, a work order, on-hand of an item)
        serves: its pegs, each traced up the BOM to the independent demands behind it."""
        if not supply:
            raise Invalid("supply must not be empty")
        with self._db.transaction(write=False) as tx:
            self._check_mrp_item(tx, item)
            stored = tx.mrp_run()
            if stored is None:
                raise NotFound("no MRP run yet: POST /api/mrp/runs to plan")
            pegs = tx.mrp_pegs_of_supply(supply, item)
            items = sorted({peg_item for peg_item, _, _ in pegs})
            if not pegs:
                where = f" of item {item!r}" if item is not None else ""
                raise NotFound(f"supply {supply!r}{where} serves nothing in MRP run {stored[0]}")
            if len(items) > 1:
                raise Invalid(f"supply {supply!r} is a supply of {', '.join(items)}: name the item")
            rows = [
                PegRow(
                    item=peg_item,
                    demand=demand,
                    quantity=canonical(quantity),
                    serves=[
                        DemandSourceRow(item=source_item, demand=source, kind=kind)
                        for source_item, source, kind in tx.mrp_demand_sources(peg_item, demand)
                    ],
                )
                for peg_item, demand, quantity in pegs
            ]
        return PeggingRow(run=int(stored[0]), item=items[0], supply=supply, pegs=rows)

    # --- capable-to-promise ------------------------------------------------------------------

    def repromise(self) -> list[Event]:
        """Re-time every open promise now (after a purchase order changed or arrived)."""
        now = self._now()
        changes = _Changes(now)
        with self._db.transaction() as tx:
            model = self._plant(tx)
            if model is not None:
                self._promise(tx, model, self._running(tx, model, now), changes)
        return self._done(changes)

    def _ctp_plant(
        self, tx: Session, model: PlantModel, running: dict[str, _Running], kept: dict[str, Decimal]
    ) -> ctp.Plant:
        """The live plant as capable-to-promise reads it.

        Every item with a BOM can be made on every line (the master data names no routings
        yet), at the running order's measured rate there, else the line's standard rate. Lines
        work round the clock (no shift calendar in the master data yet). A BOM component that is
        no BOM parent is bought: its stock in the component store, its open purchase orders at
        their confirmed (else needed) date, then its planning lead time.
        """
        measured: dict[tuple[str, str], Decimal] = {}
        for r in running.values():
            if str(r.rate.basis) == "measured" and r.rate.per_hour > 0:
                measured[(r.order.item, r.order.line)] = r.rate.per_hour
        parents = sorted(model.boms)
        routes = [
            ctp.Route(item, line.code, measured.get((item, line.code)), line.standard_rate_per_hour)
            for item in parents
            for line in model.lines.values()
        ]
        queued = sorted(
            (
                wo
                for wo in tx.work_orders(list(_MRP_RECEIPT_STATUSES))
                if wo.line in model.lines and wo.item in model.boms
            ),
            key=lambda wo: (wo.status is not WorkOrderStatus.RUNNING, wo.number),
        )
        queue = [ctp.QueuedWork(wo.number, wo.line, wo.item, wo.remaining) for wo in queued]
        finished = model.places.finished
        made = set(parents) | set(kept) | {line.item for line in tx.sales_lines(open_only=True)}
        stock = [
            ctp.FinishedStock(
                item, max(tx.on_hand(item, finished), Decimal(0)), kept.get(item, Decimal(0))
            )
            for item in sorted(made)
        ]
        scrap = tx.bom_scrap()
        bom = [
            PlanningBomLine(
                parent, b.component, b.quantity, scrap.get((parent, b.component), Decimal(0))
            )
            for parent, lines in model.boms.items()
            for b in lines
        ]
        bought = sorted({b.component for b in bom} - set(parents))
        planning = tx.item_planning()
        components = [
            ctp.ComponentSupply(
                item,
                max(tx.on_hand(item, model.places.components), Decimal(0)),
                timedelta(days=planning[item][0]) if item in planning else None,
            )
            for item in bought
        ]
        orders = [
            ctp.PurchaseOrder(
                order.number,
                po_line.item,
                po_line.open_quantity,
                datetime.combine(po_line.expected_date, dtime(0), UTC),
            )
            for order in PurchasingStore(tx).orders(statuses=list(_CTP_PO_STATUSES))
            for po_line in order.lines
            if po_line.item in bought and po_line.open_quantity > 0
        ]
        calendars = {code: ctp.WorkingCalendar.always() for code in model.lines}
        return ctp.Plant(calendars, routes, queue, stock, bom, components, orders)

    def _capable(
        self,
        tx: Session,
        model: PlantModel,
        running: dict[str, _Running],
        changes: _Changes,
        *,
        short: dict[str, list[SalesLine]],
        kept: dict[str, Decimal],
    ) -> None:
        """Promise the lines the stock/work-order rule left short by capable-to-promise.

        Orders go one by one, the earliest requested first; what an order takes of finished
        stock and line time is passed on to the next (component stock and purchase orders are
        not: each order sees them whole - a known simplification).
        """
        now = changes.now
        by_order: dict[str, list[SalesLine]] = {}
        for lines in short.values():
            for line in lines:
                by_order.setdefault(line.order, []).append(line)
        try:
            plant = self._ctp_plant(tx, model, running, kept)
        except (Invalid, PlanningError) as error:
            log.warning("capable-to-promise skipped: %s", error)
            return
        first = sorted(by_order, key=lambda o: (min(x.requested_date for x in by_order[o]), o))
        taken: dict[str, Decimal] = {}
        for order in first:
            numbered = {x.line: x for x in by_order[order]}
            wanted = [
                ctp.OrderLine(x.line, x.item, x.quantity, x.requested_date)
                for x in numbered.values()
            ]
            stock = [
                ctp.FinishedStock(s.item, s.on_hand, s.promised + taken.get(s.item, Decimal(0)))
                for s in plant.stock
            ]
            try:
                promises = ctp.promise_order(order, wanted, replace(plant, stock=stock), now)
            except Invalid as error:
                log.warning("capable-to-promise of %s skipped: %s", order, error)
                continue
            queue = list(plant.queue)
            for promise in promises:
                for step in promise.steps:
                    if step.kind is ctp.StepKind.STOCK and step.reference == promise.item:
                        taken[promise.item] = taken.get(promise.item, Decimal(0)) + step.quantity
                made = [s for s in promise.steps if s.kind is ctp.StepKind.PRODUCTION]
                if made and promise.promised_at is not None:
                    label = f"{order} line {promise.line}"
                    queue.append(
                        ctp.QueuedWork(label, made[-1].reference, promise.item, made[-1].quantity)
                    )
                self._record_capable(tx, numbered[promise.line], promise, changes)
            plant = replace(plant, queue=queue)

    def _record_capable(
        self, tx: Session, line: SalesLine, promise: ctp.CtpPromise, changes: _Changes
    ) -> None:
        """Store and announce a capable-to-promise promise when it is a new one."""
        # The stored kinds are the rule's (a CHECK since migration 1): a promise that waits for
        # a purchase is a production promise; its steps tell the purchase.
        purchase = promise.kind is ctp.CtpKind.PURCHASE
        kind = str(PromiseKind.PRODUCTION if purchase else promise.kind)
        at = promise.promised_at
        if line.promise_kind == kind:
            if line.promised_at is None or at is None:
                if line.promised_at == at:
                    return
            elif abs(at - line.promised_at) <= self._promise_tolerance:
                return
        reason = promise.reason
        steps = json.dumps([step.to_json() for step in promise.steps])
        tx.record_promise(
            line.order,
            line.line,
            promised_at=at,
            kind=kind,
            reason=reason,
            at=changes.now,
            steps=steps,
        )
        row = _sales_row(line).model_copy(
            update={"promised_at": at, "promise_reason": reason, "at_risk": promise.at_risk}
        )
        previous = iso_utc(line.promised_at) if line.promised_at else None
        changes.add(
            PROMISE_CHANGED,
            {**row.to_json(), "previous_promised_at": previous, "steps": json.loads(steps)},
        )


def _earliest(samples: Iterable[Sample]) -> dict[LatestKey, datetime]:
    """The earliest timestamp per (machine, metric)."""
    earliest: dict[LatestKey, datetime] = {}
    for sample in samples:
        key = (sample.machine, sample.metric)
        if key not in earliest or sample.timestamp < earliest[key]:
            earliest[key] = sample.timestamp
    return earliest


def _keys(moves: Iterable[Move]) -> set[BalanceKey]:
    return {(m.item, loc) for m in moves for loc in (m.from_location, m.to_location)}


def _number(values: dict[str, Latest], metric: str) -> Decimal | None:
    latest = values.get(metric)
    number = as_decimal(latest.value) if latest else None
    return canonical(number) if number is not None and number.is_finite() else None


def _sales_row(line: SalesLine) -> SalesOrderLineRow:
    return SalesOrderLineRow(
        order=line.order,
        customer=line.customer,
        line=line.line,
        item=line.item,
        quantity=canonical(line.quantity),
        requested_date=line.requested_date,
        promised_at=line.promised_at,
        promise_reason=line.promise_reason,
        at_risk=_at_risk(line.promised_at, line.requested_date),
    )


def _next_number(existing: Iterable[str]) -> str:
    numbers = [int(m.group(1)) for n in existing if (m := _WORK_ORDER_NUMBER.match(n))]
    return f"WO-{max(numbers, default=_FIRST_WORK_ORDER - 1) + 1}"


def _check_demand(tx: Session, model: PlantModel, demand: str | SalesLineRef, item: str) -> None:
    """The demand exists, still needs material, and needs this item."""
    if isinstance(demand, SalesLineRef):
        lines = {(sales.order, sales.line): sales for sales in tx.sales_lines()}
        line = lines.get((demand.order, demand.line))
        if line is None:
            raise Invalid(f"no sales order line {demand.order}/{demand.line}")
        if all(
            (s.order, s.line) != (demand.order, demand.line) for s in tx.sales_lines(open_only=True)
        ):
            raise Conflict(f"sales order line {demand.order}/{demand.line} is closed")
        if line.item != item:
            raise Invalid(
                f"sales order line {demand.order}/{demand.line} is for {line.item}, not {item}"
            )
        return
    wo = tx.work_order(demand)
    if wo is None:
        raise Invalid(f"no work order {demand!r}")
    if wo.status in _FINISHED:
        raise Conflict(f"work order {demand} is {wo.status}: it draws no more material")
    components = {line.component for line in model.boms.get(wo.item, ())}
    if item not in components:
        raise Invalid(f"{item} is not a component of work order {demand} ({wo.item})")


def _open_reservation(tx: Session, number: int) -> Reservation:
    reservation = tx.reservation(number, lock=True)
    if reservation is None:
        raise NotFound(f"no reservation {number}")
    if reservation.closed_at is not None:
        raise Conflict(f"reservation {number} is already {reservation.status}")
    return reservation


def _balance_row(model: PlantModel, balance: Balance, unit_cost: Decimal) -> BalanceRow:
    known = model.items.get(balance.item)
    return BalanceRow(
        item=balance.item,
        name=known.name if known else balance.item,
        location=balance.location,
        on_hand=canonical(balance.on_hand),
        reserved=canonical(balance.reserved),
        available=canonical(balance.available),
        uom=known.uom if known else "",
        unit_cost=canonical(unit_cost),
        value=canonical(balance.on_hand * unit_cost),
    )


def _reservation_row(reservation: Reservation) -> ReservationRow:
    return ReservationRow(
        id=reservation.id,
        item=reservation.item,
        location=reservation.location,
        demand=reservation.demand,
        status=reservation.status,
        quantity=canonical(reservation.quantity),
        open=canonical(reservation.open),
        consumed=canonical(reservation.consumed),
        released=canonical(reservation.released),
        created_at=reservation.created_at,
        closed_at=reservation.closed_at,
    )


def _check_line_free(tx: Session, wo: WorkOrder) -> None:
    others = [
        other.number
        for other in tx.work_orders([WorkOrderStatus.RUNNING], [wo.line])
        if other.number != wo.number
    ]
    if others:
        raise Conflict(f"line {wo.line} is already running {', '.join(others)}")
