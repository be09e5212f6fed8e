"""MRP on the plant's live data: the engine's inputs read from the database, its result stored.

The engine (`taktline_cloud.planning`) is pure; this adapter decides what the plant's data
means to it, in one transaction of the caller's:

* on hand = available (on hand minus reserved) summed over the internal locations;
* independent demand = each open sales order line at its requested date, less what is already
  reserved for it or shipped against its reservations (that stock is no longer available);
* scheduled receipts = each created, released, dispatched, running or held work order's
  remaining quantity at its projected completion (the caller computes it from the measured
  rate), and each open purchase order line's open quantity at its confirmed else needed date
  (`purchase_receipts`; a draft order counts too: it is what approving a buy order makes, and
  without it the next run would suggest the same order again);
* buckets of a day or a week from today over the plant's horizon (plant.yaml `planning`);
* forecast demand (only for the items `ForecastSettings` names: plant.yaml
  `items[].planning.forecast`, off by default): each bucket's statistical forecast from the
  item's sales history, less what booked orders consume of it. The orders stay demands of
  their own (they carry the pegging to the customer); only the *remaining* forecast is added,
  or an order would be planned twice, once as itself and once inside the forecast.

A run replaces the previous run's planned orders, pegs, messages and traced demands in the
same transaction, so a reader sees one whole run or the other: a regenerative run all of them,
a net-change run those of the items it re-planned (the rest of the stored result is already
the plan it went on from; see `store_plan`).

A regenerative run in progress is an `MrpJob` (in memory, one process): its phase (reading,
planning, storing) and items planned of those known, which the planner's progress callback
updates from whatever thread plans; it hands throttled `mrp.progress` events to the live feed
and ends with one `mrp.run.finished` (the stored run's summary, or the error).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from taktline_cloud.errors import Invalid
from taktline_cloud.events import MRP_PROGRESS, MRP_RUN_FINISHED, Event
from taktline_cloud.masterdata import PlantData
from taktline_cloud.org.plant import PlantModel
from taktline_cloud.planning.bom import BomLine
from taktline_cloud.planning.buckets import Buckets
from taktline_cloud.planning.forecast import Bucket, DemandSeries, consume, demand_series, forecast
from taktline_cloud.planning.items import ItemPlanning, LotRule, LotSize, Source
from taktline_cloud.planning.mrp import (
    NEGATIVE_ON_HAND,
    SAFETY_STOCK,
    Demand,
    DemandKind,
    MrpPlan,
    PlanningData,
    ReceiptKind,
    ScheduledReceipt,
    trace,
)
from taktline_cloud.production.work_orders import WorkOrderStatus
from taktline_cloud.purchasing.orders import PoStatus
from taktline_cloud.readmodels import Dec, MrpRunRow, UtcTime
from taktline_cloud.storage import Session
from taktline_cloud.storage.forecasting import sales_by_requested_date
from taktline_cloud.storage.purchasing import PurchasingStore

PLANNER_LOCK = 0x7A4B_3A50
"""PostgreSQL advisory lock id of planner jobs: one MRP run at a time per database."""

REGENERATIVE = "regenerative"
NET_CHANGE = "net-change"

ZERO = Decimal(0)

MRP_PO_STATUSES = (
    PoStatus.DRAFT,
    PoStatus.SENT,
    PoStatus.CONFIRMED,
    PoStatus.CHANGED,
    PoStatus.PARTIALLY_RECEIVED,
)
"""Purchase orders whose open lines are supply to MRP (received, closed, cancelled are not)."""


def sales_demand_id(order: str, line: int) -> str:
    """The id of a sales order line as a demand (the form reservations use: SO-1001/1)."""
    return f"{order}/{line}"


def buckets_for(today: date, bucket_days: int, horizon_days: int) -> Buckets:
    """Buckets of `bucket_days` from today covering at least `horizon_days`."""
    return Buckets(today, bucket_days, -(-horizon_days // bucket_days))


def purchase_receipt_id(order: str, line: int) -> str:
    """A PO line's id as a scheduled receipt (PO-000001/1), so messages and pegging name it."""
    return f"{order}/{line}"


def purchase_receipts(tx: Session, items: Collection[str]) -> list[ScheduledReceipt]:
    """Open purchase order lines of `items` as scheduled receipts: the open quantity (agreed
    less received) at the confirmed date, else the needed date."""
    receipts = []
    for order in PurchasingStore(tx).orders(statuses=MRP_PO_STATUSES):
        for line in order.lines:
            if line.item not in items or line.open_quantity <= 0:
                continue
            receipts.append(
                ScheduledReceipt(
                    purchase_receipt_id(order.number, line.number),
                    line.item,
                    line.expected_date,
                    line.open_quantity,
                    ReceiptKind.PURCHASE_ORDER,
                )
            )
    return receipts


def _lot_size(
    rule: str,
    quantity: Decimal | None,
    minimum: Decimal | None,
    multiple: Decimal | None,
    periods: int | None,
) -> LotSize:
    lot_rule = LotRule(rule)
    if lot_rule is LotRule.FIXED:
        return LotSize.fixed(quantity or ZERO)
    if lot_rule is LotRule.MIN_MULTIPLE:
        return LotSize.min_multiple(minimum or ZERO, multiple or ZERO)
    if lot_rule is LotRule.PERIODS_OF_SUPPLY:
        return LotSize.periods_of_supply(periods or 1)
    return LotSize.lot_for_lot()


def _items(tx: Session, model: PlantModel, buckets: Buckets) -> list[ItemPlanning]:
    """Every item's planning data; an item without any: make with a BOM, else buy."""
    stored = tx.item_planning()
    items = []
    for sku in model.items:
        row = stored.get(sku)
        if row is None:
            source = Source.MAKE if model.boms.get(sku) else Source.BUY
            items.append(ItemPlanning(sku, source=source))
            continue
        lead_days, safety, rule, quantity, minimum, multiple, periods, source_name = row
        items.append(
            ItemPlanning(
                sku,
                lead_time=buckets.lead_buckets(lead_days),
                safety_stock=safety,
                lot_size=_lot_size(rule, quantity, minimum, multiple, periods),
                source=Source(source_name),
            )
        )
    return items


def _sales_demands(tx: Session) -> list[Demand]:
    """Open sales order lines less what is reserved for them or shipped from a reservation."""
    allocated: dict[str, Decimal] = {}
    for reservation in tx.reservations(open_only=False):
        if "/" in reservation.demand:
            taken = reservation.open + reservation.consumed
            allocated[reservation.demand] = allocated.get(reservation.demand, ZERO) + taken
    demands = []
    for line in tx.sales_lines(open_only=True):
        demand_id = sales_demand_id(line.order, line.line)
        quantity = max(line.quantity - allocated.get(demand_id, ZERO), ZERO)
        demands.append(
            Demand(demand_id, line.item, line.requested_date, quantity, DemandKind.SALES)
        )
    return demands


OPEN_WORK_ORDERS = (
    WorkOrderStatus.CREATED,
    WorkOrderStatus.RELEASED,
    WorkOrderStatus.DISPATCHED,
    WorkOrderStatus.RUNNING,
    WorkOrderStatus.HELD,
)
"""Work orders whose output MRP counts as supply and whose components it counts as demand."""


def work_order_demand_id(number: str, component: str) -> str:
    """The id of an open work order's remaining need of one component: WO-1001/RM-SCREW-M6."""
    return f"{number}/{component}"


def _work_order_demands(tx: Session, bom: Sequence[BomLine], due: date) -> list[Demand]:
    """Each open work order's remaining component need, due now.

    An open work order is supply of its item (a scheduled receipt), so its components are
    demand: remaining quantity x per x (1 + scrap), less what is reserved for the order
    (reserved stock is already out of the available stock MRP starts from). Without this an
    approved make order would hide its components' need from the plan.
    """
    reserved: dict[tuple[str, str], Decimal] = {}
    for reservation in tx.reservations():
        key = (reservation.demand, reservation.item)
        reserved[key] = reserved.get(key, ZERO) + reservation.open
    components: dict[str, list[BomLine]] = {}
    for line in bom:
        components.setdefault(line.parent, []).append(line)
    demands = []
    for wo in tx.work_orders(OPEN_WORK_ORDERS):
        if wo.remaining <= 0:
            continue
        for line in components.get(wo.item, ()):
            need = wo.remaining * line.per * (1 + line.scrap)
            need -= reserved.get((wo.number, line.component), ZERO)
            if need > 0:
                demands.append(
                    Demand(
                        work_order_demand_id(wo.number, line.component),
                        line.component,
                        due,
                        need,
                        DemandKind.WORK_ORDER,
                    )
                )
    return demands


@dataclass(frozen=True, slots=True)
class ForecastSettings:
    """Which items MRP plans a forecast for, and how far orders reach to consume it.

    `backward` / `forward`: how many earlier / later forecast buckets an order may consume
    when its own bucket's forecast is used up (0 and 0: its own bucket only).
    """

    items: frozenset[str] = frozenset()
    backward: int = 0
    forward: int = 0


def forecast_settings(plant: PlantData) -> ForecastSettings:
    """The items whose plant.yaml planning says `forecast: true`."""
    return ForecastSettings(frozenset(i.sku for i in plant.items if i.planning.forecast))


def forecast_demand_id(item: str, bucket_start: date) -> str:
    """The id of one bucket's remaining forecast as a demand: FC/FG-100/2026-11-30."""
    return f"FC/{item}/{bucket_start.isoformat()}"


def forecast_bucket(buckets: Buckets) -> Bucket:
    """The forecast's bucket for the plan's: a day, or an ISO week for week buckets."""
    if buckets.days == 1:
        return Bucket.DAY
    if buckets.days == 7:
        return Bucket.WEEK
    raise Invalid(f"a forecast needs day or week MRP buckets, not {buckets.days} days")


def _forecast_window(buckets: Buckets) -> tuple[Bucket, date, int]:
    """The forecast's bucket, the start of the bucket holding the plan's first day, and how
    many forecast buckets reach the plan's end."""
    bucket = forecast_bucket(buckets)
    current = bucket.start_of(buckets.start)
    horizon = -(-(buckets.end - current).days // bucket.length.days)
    return bucket, current, horizon


def fit_forecasts(
    tx: Session, buckets: Buckets, items: Collection[str], settings: ForecastSettings
) -> dict[str, DemandSeries]:
    """Each forecast item's statistical forecast over the plan's horizon (not yet consumed).

    History: the item's sales by requested date up to the bucket holding the plan's first day
    (that bucket is forecast, not history: it is not over). An item without sales history
    gets no forecast. A regenerative run fits; a net-change run re-consumes the last fit.
    """
    bucket, current, horizon = _forecast_window(buckets)
    fitted: dict[str, DemandSeries] = {}
    for item in sorted(settings.items & set(items)):
        history = sales_by_requested_date(tx, item, before=current)
        if not history:
            continue
        series = demand_series(history, bucket, through=current - timedelta(days=1))
        fitted[item] = forecast(series, horizon).series
    return fitted


def remaining_forecast(
    tx: Session,
    buckets: Buckets,
    fitted: Mapping[str, DemandSeries],
    settings: ForecastSettings,
    items: Collection[str] | None = None,
) -> list[Demand]:
    """The forecast of `fitted` (of `items` only, when given) less the orders booked now, per
    bucket, as demands. Booked orders from the bucket holding the plan's first day on consume
    the forecast. A bucket that began before the plan is due on the plan's first day."""
    _, current, _ = _forecast_window(buckets)
    demands: list[Demand] = []
    for item, plan in sorted(fitted.items()):
        if items is not None and item not in items:
            continue
        orders = sales_by_requested_date(tx, item, since=current)
        for row in consume(plan, orders, backward=settings.backward, forward=settings.forward):
            if row.remaining_forecast > 0:
                demands.append(
                    Demand(
                        forecast_demand_id(item, row.start),
                        item,
                        max(row.start, buckets.start),
                        row.remaining_forecast,
                        DemandKind.FORECAST,
                    )
                )
    return demands


def forecast_demands(
    tx: Session, buckets: Buckets, items: Collection[str], settings: ForecastSettings
) -> list[Demand]:
    """Each forecast item's remaining forecast per bucket over the plan's horizon: fitted now
    (`fit_forecasts`), consumed by the orders booked now (`remaining_forecast`)."""
    return remaining_forecast(tx, buckets, fit_forecasts(tx, buckets, items, settings), settings)


def bom_lines(tx: Session, model: PlantModel) -> list[BomLine]:
    """The plant's BOM as the engine takes it (with each line's scrap factor)."""
    scrap = tx.bom_scrap()
    return [
        BomLine(parent, line.component, line.quantity, scrap.get((parent, line.component), ZERO))
        for parent, lines in model.boms.items()
        for line in lines
    ]


def independent_demands(
    tx: Session,
    model: PlantModel,
    buckets: Buckets,
    bom: Sequence[BomLine],
    forecasting: ForecastSettings | None = None,
    *,
    fitted: Mapping[str, DemandSeries] | None = None,
) -> list[Demand]:
    """Open sales lines, open work orders' remaining components and the remaining forecast of
    the items `forecasting` names: everything MRP plans that no parent's planned order causes.
    With `fitted` (a forecast already fitted, e.g. by the last run) it is consumed by the orders
    booked now instead of fitting anew."""
    demands = _sales_demands(tx)
    demands.extend(_work_order_demands(tx, bom, buckets.start))
    settings = forecasting if forecasting is not None else ForecastSettings()
    if fitted is not None:
        demands.extend(remaining_forecast(tx, buckets, fitted, settings, model.items))
    elif settings.items:
        demands.extend(forecast_demands(tx, buckets, model.items, settings))
    return demands


def planning_data(
    tx: Session,
    model: PlantModel,
    buckets: Buckets,
    receipts: Iterable[ScheduledReceipt],
    *,
    forecasting: ForecastSettings | None = None,
    fitted: Mapping[str, DemandSeries] | None = None,
) -> PlanningData:
    """The engine's inputs from the database as this transaction sees it (with the remaining
    forecast of the items `forecasting` names; of `fitted` when given, see
    `independent_demands`)."""
    bom = bom_lines(tx, model)
    available = {
        item: quantity for item, quantity in tx.available_by_item().items() if item in model.items
    }
    demands = independent_demands(tx, model, buckets, bom, forecasting, fitted=fitted)
    return PlanningData(
        buckets,
        _items(tx, model, buckets),
        bom=bom,
        demands=demands,
        receipts=receipts,
        on_hand=available,
    )


def copy_data(data: PlanningData) -> PlanningData:
    """A copy whose `set_*` changes leave `data` as it was (rows are replaced, never edited)."""
    copy = object.__new__(PlanningData)
    copy.__dict__.update(data.__dict__)
    copy.items = dict(data.items)
    copy.demands = dict(data.demands)
    copy.receipts = dict(data.receipts)
    copy.on_hand = dict(data.on_hand)
    copy.beyond_horizon = set(data.beyond_horizon)
    return copy


@dataclass(frozen=True, slots=True)
class StoredRun:
    """A run as stored: its summary row, and the plan, data and fitted forecasts (by item) a
    net-change run goes on from."""

    row: MrpRunRow
    plan: MrpPlan
    data: PlanningData
    forecasts: Mapping[str, DemandSeries] = field(default_factory=dict)


def _source_kind(plan: MrpPlan, item: str, demand: str) -> str:
    if demand in (SAFETY_STOCK, NEGATIVE_ON_HAND):
        return demand
    for requirement in plan.records[item].requirements:
        if requirement.id == demand:
            return str(requirement.kind)
    return "unknown"  # pragma: no cover - trace only returns demands of the plan


def _item_rows(
    plan: MrpPlan, item: str
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[tuple[object, ...]]]:
    """One item's planned orders, pegs and messages as `Session.replace_mrp_result` takes them."""
    day = plan.buckets.first_day
    record = plan.records[item]
    planned_orders: list[tuple[object, ...]] = [
        (o.id, o.item, str(o.source), o.quantity, o.due, o.release, day(o.due), day(o.release))
        for o in record.planned_orders
    ]
    pegs: list[tuple[object, ...]] = [
        (item, position, peg.supply, peg.demand, peg.quantity)
        for position, peg in enumerate(record.pegs)
    ]
    exceptions: list[tuple[object, ...]] = [
        (
            item,
            position,
            str(m.kind),
            m.order,
            m.bucket,
            day(m.bucket),
            m.to,
            None if m.to is None else day(m.to),
            m.quantity,
        )
        for position, m in enumerate(record.exceptions)
    ]
    return planned_orders, pegs, exceptions


def _item_sources(plan: MrpPlan, item: str) -> list[tuple[object, ...]]:
    """The independent demands behind each requirement the item's pegs serve (`trace`)."""
    sources: list[tuple[object, ...]] = []
    traced: set[str] = set()
    for peg in plan.records[item].pegs:
        if peg.demand in traced:
            continue
        traced.add(peg.demand)
        sources.extend(
            (item, peg.demand, source_item, source, _source_kind(plan, source_item, source))
            for source_item, source in trace(plan, item, peg.demand)
        )
    return sources


def items_below(plan: MrpPlan, items: Iterable[str]) -> set[str]:
    """`items` and every component below them, all BOM levels down."""
    found = set(items)
    stack = list(found)
    while stack:
        for component, _ in plan.children.get(stack.pop(), ()):
            if component not in found:
                found.add(component)
                stack.append(component)
    return found


def store_plan(
    tx: Session,
    plan: MrpPlan,
    data: PlanningData,
    *,
    kind: str,
    started_at: datetime,
    started_clock: float,
    forecasts: Mapping[str, DemandSeries] | None = None,
    previous: MrpPlan | None = None,
) -> StoredRun:
    """Store `plan` as the latest result; the run's summary (timed from `started_clock`, a
    `time.perf_counter()` reading taken when the run began) counts the whole plan.

    A regenerative run replaces every result row. A net-change run (`kind` NET_CHANGE) is a
    change of the stored result: its caller made it from the plan of the latest stored run
    (checked under the planner lock), so only the rows of the items it re-planned
    (`plan.replanned`, the cascade to components included) are replaced, in the same
    transaction. The demand sources are re-traced further down: a requirement's sources follow
    the pegs of its parents up the BOM, so every item below a re-planned one is traced anew,
    even where its own record stands (a parent's pegs moved to other sales lines, its planned
    orders, and so its components' requirements, the same). With `previous` (the plan the net
    change went on from, whose rows are the ones stored) such an item's sources are rewritten
    only when they differ from its sources in `previous` (a re-planned item's too: the sources
    are kept by requirement, apart from its pegs).
    """
    records = plan.records
    sources: list[tuple[object, ...]] = []
    if kind == NET_CHANGE:
        planned = sorted(set(plan.replanned))
        traced = []
        for item in sorted(items_below(plan, planned)):
            item_sources = _item_sources(plan, item)
            if previous is None or item_sources != _item_sources(previous, item):
                traced.append(item)
                sources.extend(item_sources)
    else:
        planned = traced = sorted(records)
        for item in traced:
            sources.extend(_item_sources(plan, item))
    planned_orders: list[tuple[object, ...]] = []
    pegs: list[tuple[object, ...]] = []
    exceptions: list[tuple[object, ...]] = []
    for item in planned:
        item_orders, item_pegs, item_exceptions = _item_rows(plan, item)
        planned_orders.extend(item_orders)
        pegs.extend(item_pegs)
        exceptions.extend(item_exceptions)
    elapsed = timedelta(seconds=time.perf_counter() - started_clock)
    finished_at = started_at + elapsed
    buckets = plan.buckets
    summary = (
        kind,
        started_at,
        finished_at,
        buckets.start,
        buckets.days,
        buckets.count,
        len(records),
        len(plan.replanned),
        sum(len(r.planned_orders) for r in records.values()),
        sum(len(r.pegs) for r in records.values()),
        sum(len(r.exceptions) for r in records.values()),
        len(data.beyond_horizon),
    )
    if kind == NET_CHANGE:
        run_id = tx.replace_mrp_items(
            summary, planned_orders, pegs, exceptions, sources, items=planned, traced_items=traced
        )
    else:
        run_id = tx.replace_mrp_result(summary, planned_orders, pegs, exceptions, sources)
    return StoredRun(run_row((run_id, *summary)), plan, data, dict(forecasts or {}))


def run_row(stored: Sequence[Any]) -> MrpRunRow:
    """The summary row from `Session.mrp_run`'s columns."""
    started_at, finished_at = stored[2], stored[3]
    elapsed = finished_at - started_at
    micros = (elapsed.days * 86_400 + elapsed.seconds) * 1_000_000 + elapsed.microseconds
    counts = [int(value) for value in stored[5:]]
    return MrpRunRow(
        id=int(stored[0]),
        kind=str(stored[1]),
        started_at=started_at,
        finished_at=finished_at,
        duration_ms=Decimal(micros).scaleb(-3),
        plan_start=stored[4],
        bucket_days=counts[0],
        bucket_count=counts[1],
        items=counts[2],
        items_planned=counts[3],
        planned_orders=counts[4],
        pegs=counts[5],
        exceptions=counts[6],
        beyond_horizon=counts[7],
    )


def affected_items(model: PlantModel, items: Iterable[str]) -> set[str]:
    """The items a posting of orders for `items` changes: the items and their components."""
    changed: set[str] = set()
    for item in items:
        changed.add(item)
        changed.update(line.component for line in model.boms.get(item, ()))
    return changed


# --- runs in progress ----------------------------------------------------------------------------

RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"

PHASE_READING = "reading"
PHASE_PLANNING = "planning"
PHASE_STORING = "storing"

PROGRESS_INTERVAL_S = 0.25
"""A progress event at most this often, unless the run moved `PROGRESS_STEP` percent since."""
PROGRESS_STEP = Decimal(5)


class MrpProgressRow(BaseModel):
    """A run's progress: planned items of all known so far, the phase, and once finished the
    stored run's summary (`run.id` is the run's id in /api/mrp/runs/{id})."""

    model_config = ConfigDict(frozen=True)

    job: int
    """This process's number for the run (the stored run's id exists once it is stored)."""
    kind: str
    status: str
    """running | finished | failed"""
    phase: str
    """reading | planning | storing while running; then finished or failed."""
    done: int
    total: int
    percent: Dec
    started_at: UtcTime
    finished_at: UtcTime | None = None
    run: MrpRunRow | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready dict (Decimal as str, datetime as ISO "…Z")."""
        return self.model_dump(mode="json")


Emit = Callable[[list[Event]], None]
"""Where a job hands its live events (the app: to the hub, from any thread)."""


class MrpJob:
    """One MRP run while it goes on: its phase and items done, updated by the planner (on any
    thread) and read by the API; `mrp.progress` events throttled, then one `mrp.run.finished`.

    Throttle: a progress event when the run moved `PROGRESS_STEP` percent, or
    `PROGRESS_INTERVAL_S` passed, since the last one; the first and the last always.
    """

    def __init__(
        self,
        job: int,
        kind: str,
        started_at: datetime,
        *,
        emit: Emit | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._lock = threading.Lock()
        self._emit = emit
        self._clock = clock
        self._now = now
        self._row = MrpProgressRow(
            job=job,
            kind=kind,
            status=RUNNING,
            phase=PHASE_READING,
            done=0,
            total=0,
            percent=ZERO,
            started_at=started_at,
        )
        self._last_sent: tuple[float, Decimal] | None = None

    @property
    def id(self) -> int:
        return self._row.job

    @property
    def running(self) -> bool:
        return self._row.status == RUNNING

    def row(self) -> MrpProgressRow:
        """The progress as it is now (an immutable copy)."""
        with self._lock:
            return self._row

    def _event(self, kind: str, row: MrpProgressRow) -> Event:
        return Event(kind, row.to_json(), self._now())

    def _send(self, events: list[Event]) -> None:
        if self._emit is not None and events:
            self._emit(events)

    def phase(self, phase: str) -> None:
        """The run moved on to `phase` (always sent)."""
        with self._lock:
            self._row = self._row.model_copy(update={"phase": phase})
            row = self._row
            self._last_sent = (self._clock(), row.percent)
        self._send([self._event(MRP_PROGRESS, row)])

    def progress(self, done: int, total: int) -> None:
        """The planner's callback (`planning.mrp.Progress`): `done` of `total` items planned."""
        percent = ZERO if total <= 0 else (Decimal(100) * done / total).quantize(Decimal("0.1"))
        now = self._clock()
        with self._lock:
            self._row = self._row.model_copy(
                update={"done": done, "total": total, "percent": percent}
            )
            last = self._last_sent
            due = (
                last is None
                or done >= total
                or now - last[0] >= PROGRESS_INTERVAL_S
                or percent - last[1] >= PROGRESS_STEP
            )
            if not due:
                return
            self._last_sent = (now, percent)
            row = self._row
        self._send([self._event(MRP_PROGRESS, row)])

    def finished(self, run: MrpRunRow) -> Event:
        """The run is stored; the `mrp.run.finished` event (the caller sends it with the rest
        of its unit of work's events)."""
        with self._lock:
            self._row = self._row.model_copy(
                update={
                    "status": FINISHED,
                    "phase": FINISHED,
                    "finished_at": run.finished_at,
                    "run": run,
                    "done": self._row.total,
                    "percent": Decimal(100),
                }
            )
            return self._event(MRP_RUN_FINISHED, self._row)

    def failed(self, error: str, at: datetime) -> Event:
        """The run failed (nothing stored); its `mrp.run.finished` event with the error."""
        with self._lock:
            self._row = self._row.model_copy(
                update={"status": FAILED, "phase": FAILED, "finished_at": at, "error": error}
            )
            return self._event(MRP_RUN_FINISHED, self._row)


def run_finished_event(row: MrpRunRow, at: datetime) -> Event:
    """`mrp.run.finished` of a run that ran without a job (a net-change run after a change)."""
    data = {
        "job": None,
        "kind": row.kind,
        "status": FINISHED,
        "phase": FINISHED,
        "run": row.to_json(),
        "error": None,
    }
    return Event(MRP_RUN_FINISHED, data, at)


@dataclass(frozen=True, slots=True)
class MrpStart:
    """A background run's inputs, read when it started, and its job."""

    job: MrpJob
    data: PlanningData
    started_clock: float
    forecasts: Mapping[str, DemandSeries] = field(default_factory=dict)
