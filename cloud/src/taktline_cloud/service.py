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
from fractions import Fraction
from pathlib import Path
from typing import Any

from taktline_cloud.errors import CloudError, Conflict, Invalid, NotFound
from taktline_cloud.events import (
    MACHINE_UPDATED,
    NODE_UPDATED,
    POSTING,
    PROMISE_CHANGED,
    RESERVATION_CONSUMED,
    RESERVATION_CREATED,
    RESERVATION_RELEASED,
    SALES_ORDER_UPDATED,
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
from taktline_cloud.inventory import counts as stock_counts
from taktline_cloud.inventory.balances import Balance
from taktline_cloud.inventory.counts import Count, CountStatus
from taktline_cloud.inventory.ledger import BalanceKey, Move
from taktline_cloud.inventory.lots import check_lot
from taktline_cloud.inventory.quantities import canonical, display, plain
from taktline_cloud.inventory.reservations import Reservation, SalesLineRef, parse_demand
from taktline_cloud.masterdata import PlantData, load_plant
from taktline_cloud.org.plant import ItemRef, LineRef, MachineRef, PlantModel
from taktline_cloud.planning.bom import BomLine as PlanningBomLine
from taktline_cloud.planning.bom import PlanningError
from taktline_cloud.planning.buckets import PAST_DUE, Buckets
from taktline_cloud.planning.mrp import (
    MrpPlan,
    ReceiptKind,
    ScheduledReceipt,
    net_change,
    regenerate,
)
from taktline_cloud.planning_runs import (
    NET_CHANGE,
    PHASE_PLANNING,
    PHASE_STORING,
    PLANNER_LOCK,
    REGENERATIVE,
    Emit,
    ForecastSettings,
    MrpJob,
    MrpProgressRow,
    MrpStart,
    StoredRun,
    affected_items,
    buckets_for,
    copy_data,
    fit_forecasts,
    forecast_settings,
    independent_demands,
    planning_data,
    purchase_receipts,
    run_finished_event,
    run_row,
    sales_demand_id,
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
    CountRow,
    CustomerRow,
    Dashboard,
    DemandSourceRow,
    ItemRow,
    LedgerRow,
    LotRow,
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
    SalesLineRow,
    SalesOrderLineRow,
    SalesOrderRow,
    StockRow,
    WorkOrderRow,
)
from taktline_cloud.sales import ctp
from taktline_cloud.sales.capacity import item_routes, store_capacity, working_calendars
from taktline_cloud.sales.orders import MAX_LINES as MAX_SALES_LINES
from taktline_cloud.sales.orders import (
    NewLine,
    OrderStatus,
    line_status,
    next_order_number,
    order_status,
    requested_day,
)
from taktline_cloud.sales.promise import (
    Demand,
    PromiseKind,
    Supply,
    promise_changed,
    promise_lines,
    promise_moved,
)
from taktline_cloud.storage import Database, Session
from taktline_cloud.storage.inventory_counts import CountStore
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
_MRP_JOBS_KEPT = 20
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
        promise_relative_tolerance: Fraction = Fraction(1, 100),
        capable_to_promise: bool = False,
    ) -> None:
        if min_rate_window <= timedelta(0) or rate_window < min_rate_window:
            raise Invalid("rate windows: need 0 < min_rate_window <= rate_window")
        self._db = db
        self._clock = clock
        self._rate_window = rate_window
        self._min_rate_window = min_rate_window
        self._promise_tolerance = promise_tolerance
        # A promise stands until it moves by more than the tolerance or this share of how far
        # ahead it is (sales.promise.promise_moved): the history keeps moves, not rate jitter.
        if not 0 <= promise_relative_tolerance < 1:
            raise Invalid("promise_relative_tolerance: need 0 <= share < 1")
        self._promise_relative = promise_relative_tolerance
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
            tx.set_adjustment_approval_value(plant_code, plant.inventory.adjustment_approval_value)
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
            store_capacity(tx, plant)
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
        row = _reservation_row(reservation)
        changes.add(RESERVATION_CREATED, row.to_json())
        return row, self._done(changes)

    def receive(
        self,
        item: str,
        location: str,
        quantity: Decimal,
        unit_cost: Decimal,
        reference: str,
        *,
        lot: str | None = None,
    ) -> tuple[LedgerRow, list[Event]]:
        """Book a receipt from the supplier location into a store at `unit_cost` per unit
        (it moves the item's moving average), into `lot` when given (else kept without one)."""
        if lot is not None:
            check_lot(lot)
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
            move = Move(
                item, suppliers[0], location, amount, RECEIPT, reference, changes.now, cost, lot
            )
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
        row = _reservation_row(released)
        changes.add(RESERVATION_RELEASED, {**row.to_json(), "amount": plain(reservation.open)})
        return row, self._done(changes)

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
        reserved = _reservation_row(consumed)
        # Before the stock and promise events of the same change: the reservation moved first.
        changes.events.insert(
            0,
            Event(
                RESERVATION_CONSUMED,
                {**reserved.to_json(), "amount": plain(amount), "move": row.id},
                changes.now,
            ),
        )
        return reserved, self._done(changes)

    def sales_orders(self) -> list[SalesOrderLineRow]:
        """Every sales order line with its current promise and its status (open, cancelled,
        closed)."""
        with self._db.transaction(write=False) as tx:
            return [_sales_line_row(line) for line in tx.sales_lines()]

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
                sales_orders=[
                    _sales_row(line) for line in tx.sales_lines() if line.cancelled_at is None
                ],
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
        # Outflows name no lot: FIFO over the store's lots (`inventory.lots`).
        moves = tx.split_by_lots(moves)
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
        finished = tx.on_hand_by_item(model.places.finished)  # one read, not one per item
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
            promises = promise_lines(demands, finished.get(item, Decimal(0)), supplies, now)
            stored = {(line.order, line.line): line for line in lines}
            if self._capable_to_promise:
                covered = [p for p in promises if p.kind is not PromiseKind.SHORT]
                short[item] = [stored[(p.order, p.line)] for p in promises if p not in covered]
                kept[item] = sum((stored[(p.order, p.line)].quantity for p in covered), Decimal(0))
                promises = covered
            for promise in promises:
                line = stored[(promise.order, promise.line)]
                tolerance = self._promise_tolerance
                if not promise_changed(
                    line.promised_at,
                    line.promise_kind,
                    promise,
                    tolerance,
                    now=now,
                    relative=self._promise_relative,
                ):
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

    # --- sales orders through the API: create, change, cancel ---------------------------------

    def customers(self) -> list[CustomerRow]:
        """Every customer, by code."""
        with self._db.transaction(write=False) as tx:
            return [CustomerRow(code=code, name=name) for code, name in tx.customers()]

    def add_customer(self, code: str, name: str) -> tuple[CustomerRow, list[Event]]:
        """A new customer; Conflict when the code is taken (a name is changed in plant.yaml)."""
        if not _NUMBER.match(code):
            raise Invalid(f"customer code {code!r}: 1-64 characters without spaces")
        name = name.strip()
        if not name:
            raise Invalid("customer name must not be empty")
        with self._db.transaction() as tx:
            if tx.customer_exists(code):
                raise Conflict(f"customer {code} already exists")
            tx.upsert_customer(code, name)
        return CustomerRow(code=code, name=name), []

    def items(self) -> list[ItemRow]:
        """Every item of the master data, by SKU."""
        with self._db.transaction(write=False) as tx:
            model = self._plant(tx)
        if model is None:
            return []
        return [
            ItemRow(sku=i.sku, name=i.name, kind=i.kind, uom=i.uom)
            for _, i in sorted(model.items.items())
        ]

    def sales_order(self, number: str) -> SalesOrderRow:
        """One sales order with every line (cancelled ones too); NotFound when there is none."""
        with self._db.transaction(write=False) as tx:
            return _sales_order_row(tx, number)

    def create_sales_order(
        self, customer: str, lines: Sequence[NewLine], number: str | None = None
    ) -> tuple[SalesOrderRow, list[Event]]:
        """Book a sales order (number SO-n chosen when not given) and promise it.

        One transaction stores the order and re-promises every open line (a new order may take
        stock or line time an older one was promised), as a posting does. Then MRP re-plans the
        ordered items by net change; a failed MRP run leaves the order booked.
        """
        if number is not None and not _NUMBER.match(number):
            raise Invalid(f"sales order number {number!r}: 1-64 characters without spaces")
        if not lines:
            raise Invalid("a sales order needs at least one line")
        if len(lines) > MAX_SALES_LINES:
            raise Invalid(f"a sales order has at most {MAX_SALES_LINES} lines, got {len(lines)}")
        wanted = [
            (
                position,
                line.item,
                _quantity(line.quantity, f"line {position} quantity"),
                requested_day(line.requested, f"line {position} requested date"),
            )
            for position, line in enumerate(lines, start=1)
        ]
        changes = _Changes(self._now())
        with self._db.transaction() as tx:
            model = self._require_plant(tx)
            if not tx.customer_exists(customer):
                raise Invalid(f"unknown customer {customer!r}")
            for position, item, _, _ in wanted:
                if item not in model.items:
                    raise Invalid(f"line {position}: unknown item {item!r}")
            number = number or next_order_number(tx.sales_order_numbers())
            if tx.sales_order_exists(number):
                raise Conflict(f"sales order {number} already exists")
            tx.insert_sales_order(number, customer, changes.now, wanted)
            row = self._sales_changed(tx, model, number, changes)
        self._mrp_after_sales({item for _, item, _, _ in wanted})
        return row, self._done(changes)

    def change_sales_line(
        self,
        order: str,
        line: int,
        *,
        quantity: Decimal | None = None,
        requested: date | datetime | None = None,
    ) -> tuple[SalesOrderRow, list[Event]]:
        """Change an open line's quantity and/or requested date; the line is promised anew (its
        history grows even when the date stands), every open line re-promised, MRP re-planned."""
        if quantity is None and requested is None:
            raise Invalid("nothing to change: give a quantity and/or a requested date")
        amount = None if quantity is None else _quantity(quantity, "quantity")
        day = None if requested is None else requested_day(requested, "requested date")
        changes = _Changes(self._now())
        with self._db.transaction() as tx:
            model = self._require_plant(tx)
            current = _open_sales_line(tx, order, line)
            tx.change_sales_line(
                order,
                line,
                quantity=amount if amount is not None else current.quantity,
                requested_date=day if day is not None else current.requested_date,
            )
            row = self._sales_changed(tx, model, order, changes)
        self._mrp_after_sales({current.item})
        return row, self._done(changes)

    def cancel_sales_line(self, order: str, line: int) -> tuple[SalesOrderRow, list[Event]]:
        """Cancel an open line: it is promised no more, what was reserved for it is given back,
        the other lines are re-promised (they may get its stock) and MRP drops its demand."""
        changes = _Changes(self._now())
        with self._db.transaction() as tx:
            model = self._require_plant(tx)
            current = _open_sales_line(tx, order, line)
            self._cancel_lines(tx, [current], changes)
            row = self._sales_changed(tx, model, order, changes)
        self._mrp_after_sales({current.item})
        return row, self._done(changes)

    def cancel_sales_order(self, order: str) -> tuple[SalesOrderRow, list[Event]]:
        """Cancel every open line of an order (Conflict when none is open)."""
        changes = _Changes(self._now())
        with self._db.transaction() as tx:
            model = self._require_plant(tx)
            if not tx.lock_sales_order(order):
                raise NotFound(f"no sales order {order!r}")
            lines = [x for x in tx.sales_lines() if x.order == order]
            open_lines = [x for x in lines if x.is_open]
            if not open_lines:
                state = order_status([_line_status(x) for x in lines])
                raise Conflict(f"sales order {order} is {state}: it has no open line to cancel")
            self._cancel_lines(tx, open_lines, changes)
            row = self._sales_changed(tx, model, order, changes)
        self._mrp_after_sales({x.item for x in open_lines})
        return row, self._done(changes)

    def _cancel_lines(self, tx: Session, lines: Sequence[SalesLine], changes: _Changes) -> None:
        for line in lines:
            tx.cancel_sales_line(line.order, line.line, changes.now)
            demand = sales_demand_id(line.order, line.line)
            for held in tx.reservations(demand=demand, open_only=True):
                locked = tx.reservation(held.id, lock=True)
                if locked is not None and locked.closed_at is None:
                    released = tx.release_reservation(locked, changes.now)
                    shown = {**_reservation_row(released).to_json(), "amount": plain(locked.open)}
                    changes.add(RESERVATION_RELEASED, shown)

    def _sales_changed(
        self, tx: Session, model: PlantModel, order: str, changes: _Changes
    ) -> SalesOrderRow:
        """After an order changed: re-promise every open line, announce the order as it is now."""
        self._promise(tx, model, self._running(tx, model, changes.now), changes)
        row = _sales_order_row(tx, order)
        changes.add(SALES_ORDER_UPDATED, row.to_json())
        return row

    def _mrp_after_sales(self, items: Iterable[str]) -> None:
        """The net-change hook of a sales order change: the order is committed whatever MRP
        does (as after a posting)."""
        try:
            self._mrp_net_change(items)
        except (CloudError, PlanningError):
            log.exception("net-change MRP after a sales order change failed; the next run re-plans")

    # --- inventory: lots and cycle counts (inventory.lots, inventory.counts) -----------------

    def lots(self, item: str | None = None, location: str | None = None) -> list[LotRow]:
        """Stock by item, location and lot (internal locations unless one is asked for): a row
        per lot, oldest first, and one without a lot for the stock kept without one; NotFound
        for an unknown item or location."""
        with self._db.transaction(write=False) as tx:
            model = self._plant(tx)
            if model is None:
                return []
            kinds = tx.location_kinds()
            if item is not None and item not in model.items:
                raise NotFound(f"no item {item!r}")
            if location is not None and location not in kinds:
                raise NotFound(f"no location {location!r}")
            lots: dict[BalanceKey, list[tuple[str, Decimal]]] = {}
            for lot in tx.lot_balances(item, location):
                if lot.on_hand:
                    lots.setdefault((lot.item, lot.location), []).append((lot.lot, lot.on_hand))
            rows: list[LotRow] = []
            for balance in tx.balance_rows(item, location):
                if location is None and kinds.get(balance.location) != "internal":
                    continue
                ref = model.items.get(balance.item)
                name, uom = (ref.name, ref.uom) if ref else (balance.item, "")
                in_lots = lots.get((balance.item, balance.location), [])
                kept = balance.on_hand - sum((q for _, q in in_lots), Decimal(0))
                parts: list[tuple[str | None, Decimal]] = (
                    [(None, kept)] if kept or not in_lots else []
                )
                parts += in_lots
                rows += [
                    LotRow(
                        item=balance.item,
                        name=name,
                        location=balance.location,
                        lot=code,
                        on_hand=canonical(quantity),
                        uom=uom,
                    )
                    for code, quantity in parts
                ]
            return rows

    def count_stock(
        self,
        item: str,
        location: str,
        counted: Decimal,
        user: str | None,
        lot: str | None = None,
    ) -> tuple[CountRow, list[Event]]:
        """Record a count of `item` at a store (in one lot when given): the difference to the
        book quantity is posted at once when its value is within the plant's threshold, else it
        waits (pending) for another user's approval (`inventory.counts`)."""
        who = stock_counts.check_user(user)
        amount = stock_counts.check_counted(counted)
        if lot is not None:
            check_lot(lot)
        changes = _Changes(self._now())
        with self._db.transaction() as tx:
            model = self._require_plant(tx)
            if item not in model.items:
                raise Invalid(f"unknown item {item!r}")
            kind = tx.location_kinds().get(location)
            if kind is None:
                raise Invalid(f"unknown location {location!r}")
            if kind != "internal":
                raise Invalid(f"{location} is a {kind} location: stock is counted in a store")
            if lot is not None and not tx.lot_exists(item, lot):
                raise Invalid(f"unknown lot {lot!r} of {item}")
            # Locked (PostgreSQL): the book quantity holds until the count is stored.
            book = tx.balance(item, location, lock=True).on_hand
            if lot is not None:
                book = tx.lot_balance(item, location, lot, lock=True).on_hand
            unit_cost = tx.unit_cost(item)
            threshold = tx.adjustment_approval_value(model.code)
            status = stock_counts.first_status(amount - book, unit_cost, threshold)
            count = CountStore(tx).insert(
                Count(
                    0,
                    item,
                    location,
                    lot,
                    amount,
                    book,
                    unit_cost,
                    threshold,
                    status,
                    who,
                    changes.now,
                    decided_at=None if status is CountStatus.PENDING else changes.now,
                )
            )
            if status is CountStatus.POSTED:
                self._post_count(tx, model, count, changes)
        if status is CountStatus.POSTED and count.difference:
            self._mrp_after_posting([item])
        return _count_row(count), self._done(changes)

    def counts(self, status: str | None = None, item: str | None = None) -> list[CountRow]:
        """Counts, newest first (of one status and/or item; NotFound for an unknown item)."""
        wanted = None
        if status is not None:
            try:
                wanted = CountStatus(status)
            except ValueError as exc:
                allowed = ", ".join(s.value for s in CountStatus)
                raise Invalid(f"count status {status!r}: one of {allowed}") from exc
        with self._db.transaction(write=False) as tx:
            model = self._plant(tx)
            if item is not None and (model is None or item not in model.items):
                raise NotFound(f"no item {item!r}")
            return [_count_row(c) for c in CountStore(tx).counts(wanted, item)]

    def approve_count(self, count_id: int, user: str | None) -> tuple[CountRow, list[Event]]:
        """Approve a pending count (not by the user who counted it) and post its difference
        as it was at the count; Conflict when it is not pending or cannot be posted."""
        return self._decide_count(count_id, user, approve=True)

    def reject_count(self, count_id: int, user: str | None) -> tuple[CountRow, list[Event]]:
        """Reject a pending count (any user, its counter too): nothing is posted."""
        return self._decide_count(count_id, user, approve=False)

    def _decide_count(
        self, count_id: int, user: str | None, *, approve: bool
    ) -> tuple[CountRow, list[Event]]:
        who = stock_counts.check_user(user)
        changes = _Changes(self._now())
        with self._db.transaction() as tx:
            model = self._require_plant(tx)
            store = CountStore(tx)
            # Locked first: a second decision on the count waits, then sees this one.
            count = store.get(count_id, lock=True)
            if count is None:
                raise NotFound(f"no count {count_id}")
            stock_counts.check_decision(count, who, approve=approve)
            status = CountStatus.APPROVED if approve else CountStatus.REJECTED
            if approve:
                self._post_count(tx, model, count, changes)
            store.decide(count_id, status, who, changes.now)
            decided = replace(count, status=status, decided_by=who, decided_at=changes.now)
        if approve and count.difference:
            self._mrp_after_posting([count.item])
        return _count_row(decided), self._done(changes)

    def _post_count(self, tx: Session, model: PlantModel, count: Count, changes: _Changes) -> None:
        """Post a count's difference (as at the count) between its store and the inventory
        location at the moving average; stock events and promises follow, as for a receipt."""
        difference = count.difference
        if not difference:
            return
        on_hand = tx.balance(count.item, count.location, lock=True).on_hand
        lot_on_hand = None
        if count.lot is not None:
            lot_on_hand = tx.lot_balance(count.item, count.location, count.lot, lock=True).on_hand
        stock_counts.check_postable(count, on_hand, lot_on_hand)
        ref = stock_counts.reference(count.id)
        source, target = model.inventory_location, count.location
        if difference < 0:
            source, target = target, source
        moves = [
            Move(
                count.item,
                source,
                target,
                abs(difference),
                stock_counts.COUNT,
                ref,
                changes.now,
                lot=count.lot,
            )
        ]
        if difference < 0 and count.lot is None:
            moves = tx.split_by_lots(moves)
        # Checked above against on hand: a count may take reserved stock (the shelf is short).
        tx.append_moves(moves, book_shortage=True)
        self._stock_events(tx, model, _keys(moves), changes)
        self._promise(tx, model, self._running(tx, model, changes.now), changes)

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
    _mrp_job: MrpJob | None = None
    """The latest regenerative run this service started (running, finished or failed)."""
    _mrp_jobs = 0
    _mrp_history: dict[int, MrpJob] | None = None
    """The latest regenerative runs' jobs by number (their progress, in memory only)."""

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

    def _new_mrp_job(self, emit: Emit | None) -> MrpJob:
        """A job for a regenerative run; Conflict while this service runs one already."""
        current = self._mrp_job
        if current is not None and current.running:
            raise Conflict(
                f"an MRP run is in progress (job {current.id}); try again when it has finished"
            )
        self._mrp_jobs += 1
        job = MrpJob(self._mrp_jobs, REGENERATIVE, self._now(), emit=emit, now=self._now)
        self._mrp_job = job
        if self._mrp_history is None:
            self._mrp_history = {}
        self._mrp_history[job.id] = job
        while len(self._mrp_history) > _MRP_JOBS_KEPT:
            del self._mrp_history[min(self._mrp_history)]
        return job

    def run_mrp(self, *, emit: Emit | None = None) -> tuple[MrpRunRow, list[Event]]:
        """A regenerative MRP run on the plant's data now; it replaces the latest result.

        One transaction holds the planner lock (Conflict when another run holds it), reads the
        inputs, plans and stores, so the result is the plan of the data it read. Its progress
        goes to `emit` while it runs (throttled `mrp.progress`); the events returned are its
        `mrp.run.finished` with the summary's counts.
        """
        job = self._new_mrp_job(emit)
        started_clock = time.perf_counter()
        now = job.row().started_at
        try:
            with self._db.transaction() as tx:
                self._lock_planner(tx)
                model = self._require_plant(tx)
                buckets = self._mrp_buckets(tx, model, now)
                receipts = self._mrp_receipts(tx, model, now)
                fitted = fit_forecasts(tx, buckets, model.items, self._forecasting)
                data = planning_data(
                    tx, model, buckets, receipts, forecasting=self._forecasting, fitted=fitted
                )
                job.phase(PHASE_PLANNING)
                try:
                    plan = regenerate(data, job.progress)
                except PlanningError as exc:
                    raise Invalid(f"MRP cannot plan: {exc}") from exc
                job.phase(PHASE_STORING)
                stored = store_plan(
                    tx,
                    plan,
                    data,
                    kind=REGENERATIVE,
                    started_at=now,
                    started_clock=started_clock,
                    forecasts=fitted,
                )
        except BaseException as exc:
            failed = job.failed(str(exc) or type(exc).__name__, self._now())
            if emit is not None:
                emit([failed])
            raise
        self._mrp_last = stored
        return stored.row, [job.finished(stored.row)]

    def start_mrp_run(self, *, emit: Emit | None = None) -> MrpStart:
        """Begin a regenerative run in the background: read its inputs now (one read
        transaction); `plan_mrp_run` plans them on any thread, `finish_mrp_run` stores the plan.
        Conflict while this service runs one already (a second process: when storing)."""
        job = self._new_mrp_job(emit)
        started_clock = time.perf_counter()
        now = job.row().started_at
        try:
            with self._db.transaction(write=False) as tx:
                model = self._require_plant(tx)
                buckets = self._mrp_buckets(tx, model, now)
                receipts = self._mrp_receipts(tx, model, now)
                fitted = fit_forecasts(tx, buckets, model.items, self._forecasting)
                data = planning_data(
                    tx, model, buckets, receipts, forecasting=self._forecasting, fitted=fitted
                )
        except BaseException as exc:
            failed = job.failed(str(exc) or type(exc).__name__, self._now())
            if emit is not None:
                emit([failed])
            raise
        job.phase(PHASE_PLANNING)
        return MrpStart(job, data, started_clock, fitted)

    @staticmethod
    def plan_mrp_run(start: MrpStart) -> MrpPlan:
        """Plan a started run's inputs (pure: no database, any thread), reporting progress."""
        try:
            return regenerate(start.data, start.job.progress)
        except PlanningError as exc:
            raise Invalid(f"MRP cannot plan: {exc}") from exc

    def finish_mrp_run(self, start: MrpStart, plan: MrpPlan) -> tuple[MrpRunRow, list[Event]]:
        """Store a started run's plan (under the planner lock); its `mrp.run.finished`."""
        job = start.job
        job.phase(PHASE_STORING)
        now = job.row().started_at
        with self._db.transaction() as tx:
            self._lock_planner(tx)
            stored = store_plan(
                tx,
                plan,
                start.data,
                kind=REGENERATIVE,
                started_at=now,
                started_clock=start.started_clock,
                forecasts=start.forecasts,
            )
        self._mrp_last = stored
        return stored.row, [job.finished(stored.row)]

    def fail_mrp_run(self, start: MrpStart, error: BaseException) -> list[Event]:
        """A started run that could not plan or store: failed, nothing stored."""
        return [start.job.failed(str(error) or type(error).__name__, self._now())]

    def mrp_progress(self, job: int | None = None) -> MrpProgressRow:
        """A run's progress (None: the latest run this service started); NotFound if it has
        none. Reads memory only: safe from any thread."""
        found = self._mrp_job if job is None else (self._mrp_history or {}).get(job)
        if found is None:
            which = "no MRP run started yet" if job is None else f"no MRP run job {job}"
            raise NotFound(f"{which} in this process: POST /api/mrp/runs to plan")
        return found.row()

    def mrp_run(self, run_id: int) -> MrpRunRow:
        """A stored run's summary by id (the latest 1000 are kept)."""
        with self._db.transaction(write=False) as tx:
            stored = tx.mrp_run(run_id)
        if stored is None:
            raise NotFound(f"no MRP run {run_id}")
        return run_row(stored)

    def mrp_plan(self) -> MrpPlan | None:
        """The latest stored plan if this service made it (else None: a plan of another
        process, or none yet), for what follows pegs: purchasing's supply alerts."""
        last = self._mrp_last
        if last is None:
            return None
        with self._db.transaction(write=False) as tx:
            latest = tx.mrp_run()
        if latest is None or int(latest[0]) != last.row.id:
            return None
        return last.plan

    def mrp_supply_changed(self, items: Iterable[str]) -> list[Event]:
        """A purchase order of `items` was sent, confirmed, received, cancelled or closed:
        a net-change run re-plans them (their receipts moved); its `mrp.run.finished`."""
        try:
            row = self._mrp_net_change(items)
        except (CloudError, PlanningError):
            log.exception("net-change MRP after a purchasing change failed; the next run re-plans")
            return []
        return [] if row is None else [run_finished_event(row, self._now())]

    def _mrp_net_change(self, items: Iterable[str]) -> MrpRunRow | None:
        """After a posting: re-plan the items it changed if this service holds the latest plan
        and the buckets still fit (same day); otherwise nothing (the next run sees it all)."""
        last = self._mrp_last
        if last is None or (self._mrp_job is not None and self._mrp_job.running):
            return None  # a regenerative run in progress re-plans everything
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
            # No model is fitted on a net change: the last run's forecast is consumed by the
            # orders booked now (a new order takes its share of the forecast, not more).
            bom = list(self._ctp_master_data(tx, model).bom)  # read once per plant model
            demands = independent_demands(
                tx, model, buckets, bom, self._forecasting, fitted=last.forecasts
            )
            data = copy_data(last.data)
            for item in changed:
                data.set_on_hand(item, available.get(item, Decimal(0)))
                data.set_receipts(item, [r for r in receipts if r.item == item])
                data.set_demands(item, [d for d in demands if d.item == item])
            plan = net_change(last.plan, data, changed)
            # The latest stored run is `last` (checked above): only the re-planned items' rows
            # are replaced (and the demand sources that moved below them).
            stored = store_plan(
                tx,
                plan,
                data,
                kind=NET_CHANGE,
                started_at=now,
                started_clock=started_clock,
                forecasts=last.forecasts,
                previous=last.plan,
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

    _ctp_master: tuple[PlantModel, _CtpMaster] | None = None
    """What capable-to-promise reads of the master data, with the model it was read for."""

    def _ctp_master_data(self, tx: Session, model: PlantModel) -> _CtpMaster:
        """The master-data part of `_ctp_plant`, read once per plant model.

        Routes, standard rates, BOMs with scrap, purchase lead times and calendars change only
        when the plant file is loaded, which makes a new model; the model is cached the same
        way (`_plant`). Kept calendars also keep the shift windows they have walked.
        """
        cached = self._ctp_master
        if cached is not None and cached[0] is model:
            return cached[1]
        parents = sorted(model.boms)
        named = item_routes(tx)
        made_on: dict[tuple[str, str], Decimal | None] = {}
        for item in parents:
            if item in named:
                made_on.update(
                    ((item, r.line), r.standard_rate_per_hour)
                    for r in named[item]
                    if r.line in model.lines
                )
            else:
                made_on.update(((item, code), None) for code in model.lines)
        routes = {
            (item, line): ctp.Route(
                item, line, None, standard or model.lines[line].standard_rate_per_hour
            )
            for (item, line), standard in sorted(made_on.items())
        }
        scrap = tx.bom_scrap()
        bom = tuple(
            PlanningBomLine(
                parent, b.component, b.quantity, scrap.get((parent, b.component), Decimal(0))
            )
            for parent, lines in model.boms.items()
            for b in lines
        )
        bought = sorted({b.component for b in bom} - set(parents))
        planning = tx.item_planning()
        lead_times = {
            item: timedelta(days=planning[item][0]) if item in planning else None for item in bought
        }
        calendars = working_calendars(tx, model.lines)
        master = _CtpMaster(frozenset(parents), routes, bom, lead_times, calendars)
        self._ctp_master = (model, master)
        return master

    def _ctp_plant(
        self, tx: Session, model: PlantModel, running: dict[str, _Running], kept: dict[str, Decimal]
    ) -> ctp.Plant:
        """The live plant as capable-to-promise reads it.

        An item with a BOM is made on the lines its routes name (`sales.capacity`; none named:
        every line), at the running order's measured rate there, else the item's standard rate
        on that line, else the line's; a line with a work order of the item queued makes it too.
        Each line works its shift calendar. A BOM component that is no BOM parent is bought: its
        stock in the component store, its open purchase orders at their confirmed (else needed)
        date, then its planning lead time.

        Read per re-promise: stock (one query per store), the queue, open sales items and open
        purchase orders; the master data once per model (`_ctp_master_data`).
        """
        master = self._ctp_master_data(tx, model)
        routes = dict(master.routes)  # (item, line) -> route at the standard rate
        queued = sorted(
            (
                wo
                for wo in tx.work_orders(list(_MRP_RECEIPT_STATUSES))
                if wo.line in model.lines and wo.item in model.boms
            ),
            key=lambda wo: (wo.status is not WorkOrderStatus.RUNNING, wo.number),
        )
        queue = [ctp.QueuedWork(wo.number, wo.line, wo.item, wo.remaining) for wo in queued]
        added = False
        for wo in queued:
            if (wo.item, wo.line) not in routes:
                standard = model.lines[wo.line].standard_rate_per_hour
                routes[(wo.item, wo.line)] = ctp.Route(wo.item, wo.line, None, standard)
                added = True
        for r in running.values():
            key = (r.order.item, r.order.line)
            route = routes.get(key)
            if route is not None and str(r.rate.basis) == "measured" and r.rate.per_hour > 0:
                routes[key] = ctp.Route(*key, r.rate.per_hour, route.standard_per_hour)
        # Stock in one query per store, not one per item (a thousand round trips a posting).
        finished = tx.on_hand_by_item(model.places.finished)
        made = master.parents | set(kept) | tx.open_sales_items()
        stock = [
            ctp.FinishedStock(
                item, max(finished.get(item, Decimal(0)), Decimal(0)), kept.get(item, Decimal(0))
            )
            for item in sorted(made)
        ]
        stored = tx.on_hand_by_item(model.places.components)
        components = [
            ctp.ComponentSupply(item, max(stored.get(item, Decimal(0)), Decimal(0)), lead_time)
            for item, lead_time in master.lead_times.items()
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
            if po_line.item in master.lead_times and po_line.open_quantity > 0
        ]
        ordered = [routes[key] for key in sorted(routes)] if added else list(routes.values())
        return ctp.Plant(master.calendars, ordered, queue, stock, master.bom, components, orders)

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

        Orders go one by one, the earliest requested first, through one `ctp.Promiser`: what an
        order takes of finished stock, line time, component stock and purchase orders is gone
        for the orders after it (an order refused as invalid takes nothing).
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
        try:
            promiser = ctp.Promiser(plant, now)
        except Invalid as error:
            log.warning("capable-to-promise skipped: %s", error)
            return
        first = sorted(by_order, key=lambda o: (min(x.requested_date for x in by_order[o]), o))
        for order in first:
            numbered = {x.line: x for x in by_order[order]}
            wanted = [
                ctp.OrderLine(x.line, x.item, x.quantity, x.requested_date)
                for x in numbered.values()
            ]
            try:
                promises = promiser.promise(order, wanted)
            except Invalid as error:
                log.warning("capable-to-promise of %s skipped: %s", order, error)
                continue
            for promise in promises:
                self._record_capable(tx, numbered[promise.line], promise, changes)

    def item_lines(self, item: str) -> list[str]:
        """The lines that make `item` by the master data's routes, in code order (none named:
        every line of the plant)."""
        with self._db.transaction(write=False) as tx:
            model = self._plant(tx)
            if model is None:
                return []
            named = item_routes(tx).get(item)
            if named is None:
                return sorted(model.lines)
            return [r.line for r in named if r.line in model.lines]

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
            elif not promise_moved(
                line.promised_at,
                at,
                changes.now,
                self._promise_tolerance,
                self._promise_relative,
            ):
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


def _count_row(count: Count) -> CountRow:
    return CountRow(
        id=count.id,
        item=count.item,
        location=count.location,
        lot=count.lot,
        counted=canonical(count.counted),
        book=canonical(count.book),
        difference=canonical(count.difference),
        unit_cost=canonical(count.unit_cost),
        value=canonical(count.value),
        threshold=canonical(count.threshold),
        status=str(count.status),
        counted_by=count.counted_by,
        counted_at=count.counted_at,
        decided_by=count.decided_by,
        decided_at=count.decided_at,
    )


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


def _line_status(line: SalesLine) -> OrderStatus:
    return line_status(line.is_open, line.cancelled_at is not None)


def _sales_line_row(line: SalesLine) -> SalesLineRow:
    """A line with its status; a line no longer open is at risk no more."""
    status = _line_status(line)
    row = _sales_row(line)
    return SalesLineRow(
        **{**dict(row), "at_risk": row.at_risk and status == "open"},
        status=status,
        cancelled_at=line.cancelled_at,
    )


def _sales_order_row(tx: Session, number: str) -> SalesOrderRow:
    head = tx.sales_order_head(number)
    if head is None:
        raise NotFound(f"no sales order {number!r}")
    lines = [_sales_line_row(x) for x in tx.sales_lines() if x.order == number]
    return SalesOrderRow(
        number=number,
        customer=head[0],
        created_at=head[1],
        status=order_status([x.status for x in lines]),
        lines=lines,
    )


def _open_sales_line(tx: Session, order: str, line: int) -> SalesLine:
    """The line, locked through its order; NotFound, or Conflict when it is no longer open."""
    if not tx.lock_sales_order(order):
        raise NotFound(f"no sales order {order!r}")
    found = next((x for x in tx.sales_lines() if (x.order, x.line) == (order, line)), None)
    if found is None:
        raise NotFound(f"no sales order line {order}/{line}")
    if not found.is_open:
        state = _line_status(found)
        raise Conflict(f"sales order line {order}/{line} is {state}: it cannot change")
    return found

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


@dataclass(frozen=True, slots=True)
class _CtpMaster:
    """The master-data part of capable-to-promise's plant (`PlantService._ctp_master_data`)."""

    parents: frozenset[str]  # items with a BOM
    routes: dict[tuple[str, str], ctp.Route]  # by (item, line), sorted, at standard rates
    bom: tuple[PlanningBomLine, ...]
    lead_times: dict[str, timedelta | None]  # purchase lead time of every bought component
    calendars: dict[str, ctp.WorkingCalendar]
