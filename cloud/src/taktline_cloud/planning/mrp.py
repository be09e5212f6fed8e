"""MRP: gross-to-net per item and bucket in low-level-code order, with pegging and exceptions.

The engine plans one item at a time from plain data (`PlanningData`): independent demand
(sales order lines, forecast, open work orders' remaining components), dependent demand
exploded from its parents' planned orders, on hand, scheduled receipts (open purchase orders,
running work orders at the projected completion the caller computed) and safety stock. Per
bucket it keeps the textbook rows (gross requirements, scheduled receipts, projected available
balance, net requirements, planned order receipts and releases) as tuples of Decimals indexed
by bucket, so a 10 000-item plan is rows of numbers, not objects per bucket.

Rules the numbers follow (so a planner can recompute a record by hand):

* PAB[b] = PAB[b-1] + scheduled[b] + planned_receipts[b] - gross[b], PAB[-1] = on hand, and
  PAB[b] >= safety stock in every bucket, the past-due one included.
* Scheduled receipts are firm: before planning a new order, a shortage uses the earliest open
  receipt not used yet (EXPEDITE if it is due later, DEFER if it was due earlier and not needed
  until now), so a new order is planned only once every open receipt is in use; a receipt never
  needed gets CANCEL. The scheduled-receipts row shows receipts where the plan uses them (the
  messages followed); a cancelled receipt is not in the row.
* A planned order is due in the short bucket and released `lead_time` buckets earlier; a
  release before the first bucket is put in the past-due bucket with a PAST_DUE message, as is
  a scheduled receipt already overdue. Components are needed at the parent's release.
* Pegging is first-in first-out: demands in due order (a negative on hand first, safety stock
  last) take supplies in the order the plan makes them available (on hand, then receipts and
  planned orders by bucket). So every demand is pegged in full to supplies available by its
  bucket, and lot-size excess stays unpegged. A dependent requirement's id is the id of the
  parent's planned order, which `trace` follows up to the sales order lines behind it.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from operator import itemgetter
from typing import NamedTuple

from taktline_cloud.planning.bom import (
    BomLine,
    PlanningError,
    explosion_factors,
    low_level_codes,
)
from taktline_cloud.planning.buckets import PAST_DUE, Buckets
from taktline_cloud.planning.items import ZERO, ItemPlanning, LotRule, Source

ON_HAND = "on-hand"
SAFETY_STOCK = "safety-stock"
NEGATIVE_ON_HAND = "negative-on-hand"

Progress = Callable[[int, int], None]
"""Called with (items done, items known so far) while a run goes on, and once at its end."""


class DemandKind(enum.StrEnum):
    """Where a gross requirement comes from."""

    SALES = "sales"
    FORECAST = "forecast"
    WORK_ORDER = "work-order"  # remaining components of an open work order
    DEPENDENT = "dependent"  # exploded from a parent's planned order


class ReceiptKind(enum.StrEnum):
    """What a scheduled receipt is."""

    PURCHASE_ORDER = "purchase-order"
    WORK_ORDER = "work-order"


class ExceptionKind(enum.StrEnum):
    """Action messages for the planner."""

    EXPEDITE = "expedite"  # a scheduled receipt is needed earlier than it is due
    DEFER = "defer"  # a scheduled receipt is due before it is needed
    CANCEL = "cancel"  # a scheduled receipt is not needed within the horizon
    PAST_DUE = "past-due"  # an order should have been released (or received) before the start


@dataclass(frozen=True, slots=True)
class Demand:
    """An independent demand: a sales order line, a forecast, a work order's component need."""

    id: str
    item: str
    due: date
    quantity: Decimal
    kind: DemandKind = DemandKind.SALES


@dataclass(frozen=True, slots=True)
class ScheduledReceipt:
    """An open order's expected receipt: a PO line, or a running work order's projected output."""

    id: str
    item: str
    due: date
    quantity: Decimal
    kind: ReceiptKind = ReceiptKind.PURCHASE_ORDER


class Requirement(NamedTuple):
    """A gross requirement of an item in a bucket; dependent ones name the parent's order."""

    bucket: int
    id: str  # the demand's id; for a dependent requirement, the parent's planned order id
    quantity: Decimal
    kind: DemandKind
    parent: str | None = None  # the parent item of a dependent requirement


class PlannedOrder(NamedTuple):
    """A planned order: received in `due`, released in `release` (buckets)."""

    id: str
    item: str
    quantity: Decimal
    due: int
    release: int
    source: Source


class Peg(NamedTuple):
    """`quantity` of supply `supply` (on hand, a receipt, a planned order) serves `demand`."""

    supply: str
    demand: str
    quantity: Decimal


class ExceptionMessage(NamedTuple):
    """An action message; `to` is the bucket a receipt should move to (expedite, defer)."""

    kind: ExceptionKind
    item: str
    order: str
    bucket: int
    to: int | None
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class MrpRecord:
    """One item's plan: the MRP table's rows by bucket, its orders, pegs and messages."""

    item: str
    low_level_code: int
    on_hand: Decimal
    safety_stock: Decimal
    gross: tuple[Decimal, ...]
    scheduled: tuple[Decimal, ...]
    projected: tuple[Decimal, ...]
    net: tuple[Decimal, ...]
    planned_receipts: tuple[Decimal, ...]
    planned_releases: tuple[Decimal, ...]
    requirements: tuple[Requirement, ...]
    planned_orders: tuple[PlannedOrder, ...]
    pegs: tuple[Peg, ...]
    exceptions: tuple[ExceptionMessage, ...]


DependentDemand = Mapping[str, Mapping[str, tuple[Requirement, ...]]]
"""component -> parent -> the requirements the parent's planned orders put on the component."""


@dataclass(frozen=True, slots=True)
class MrpPlan:
    """The result of a run: a record per item, and what a net-change run needs to go on."""

    buckets: Buckets
    records: Mapping[str, MrpRecord]
    dependent: DependentDemand
    replanned: tuple[str, ...]  # the items this run planned, in the order it planned them
    children: Mapping[str, tuple[tuple[str, Decimal], ...]]


class PlanningData:
    """The inputs of MRP, indexed by item, that a caller keeps and updates between runs.

    Demands and receipts past the horizon are left out of the plan; their ids are kept in
    `beyond_horizon` so a caller can show them.
    """

    def __init__(
        self,
        buckets: Buckets,
        items: Iterable[ItemPlanning],
        *,
        bom: Iterable[BomLine] = (),
        demands: Iterable[Demand] = (),
        receipts: Iterable[ScheduledReceipt] = (),
        on_hand: Mapping[str, Decimal] | None = None,
    ) -> None:
        self.buckets = buckets
        self.items: dict[str, ItemPlanning] = {}
        for planning in items:
            if planning.item in self.items:
                raise PlanningError(f"item {planning.item!r} is listed twice")
            self.items[planning.item] = planning
        self.children = explosion_factors(bom)
        self.low_level_codes = low_level_codes(self.items, self.children)
        codes = self.low_level_codes
        self.order = sorted(self.items, key=lambda item: (codes[item], item))
        self.demands: dict[str, list[Requirement]] = {}
        self.receipts: dict[str, list[tuple[int, str, Decimal]]] = {}
        self.on_hand: dict[str, Decimal] = {}
        self.beyond_horizon: set[str] = set()
        for demand in demands:
            self._add_demand(demand)
        for receipt in receipts:
            self._add_receipt(receipt)
        for item, quantity in (on_hand or {}).items():
            self.set_on_hand(item, quantity)

    def _known(self, item: str) -> None:
        if item not in self.items:
            raise PlanningError(f"unknown item {item!r}")

    def _add_demand(self, demand: Demand) -> None:
        self._known(demand.item)
        if demand.kind is DemandKind.DEPENDENT:
            raise PlanningError(f"{demand.id}: dependent demand comes from the BOM, not the caller")
        if demand.quantity < 0:
            raise PlanningError(f"{demand.id}: demand quantity must be >= 0")
        bucket = self.buckets.index(demand.due)
        if bucket is None:
            self.beyond_horizon.add(demand.id)
        elif demand.quantity:
            requirement = Requirement(bucket, demand.id, demand.quantity, demand.kind)
            self.demands.setdefault(demand.item, []).append(requirement)

    def _add_receipt(self, receipt: ScheduledReceipt) -> None:
        self._known(receipt.item)
        if receipt.quantity < 0:
            raise PlanningError(f"{receipt.id}: receipt quantity must be >= 0")
        bucket = self.buckets.index(receipt.due)
        if bucket is None:
            self.beyond_horizon.add(receipt.id)
        elif receipt.quantity:
            entry = (bucket, receipt.id, receipt.quantity)
            self.receipts.setdefault(receipt.item, []).append(entry)

    def set_on_hand(self, item: str, quantity: Decimal) -> None:
        """A posted count or move changed the item's on hand (it may be negative)."""
        self._known(item)
        self.on_hand[item] = quantity

    def set_demands(
        self, item: str, demands: Iterable[Demand], *, keep: Collection[DemandKind] = ()
    ) -> None:
        """Replace the item's independent demand (a new or changed sales order, a forecast);
        the current demand of the kinds in `keep` stays (the forecast, when only orders moved)."""
        self._known(item)
        kept = [r for r in self.demands.pop(item, ()) if r.kind in keep]
        if kept:
            self.demands[item] = kept
        for demand in demands:
            if demand.item != item:
                raise PlanningError(f"{demand.id} is for {demand.item!r}, not {item!r}")
            self._add_demand(demand)

    def set_receipts(self, item: str, receipts: Iterable[ScheduledReceipt]) -> None:
        """Replace the item's scheduled receipts (a PO confirmation or receipt, a WO projection)."""
        self._known(item)
        self.receipts.pop(item, None)
        for receipt in receipts:
            if receipt.item != item:
                raise PlanningError(f"{receipt.id} is for {receipt.item!r}, not {item!r}")
            self._add_receipt(receipt)

    def set_item(self, planning: ItemPlanning) -> None:
        """Change an item's lead time, safety stock, lot size or source."""
        self._known(planning.item)
        self.items[planning.item] = planning


_BY_DUE = itemgetter(0, 1)


def _plan_item(
    data: PlanningData, item_id: str, dependent: Iterable[tuple[Requirement, ...]]
) -> tuple[MrpRecord, dict[str, tuple[Requirement, ...]]]:
    """Gross-to-net, lot sizing, messages and pegging of one item; its components' demand."""
    item = data.items[item_id]
    size = data.buckets.size
    requirements = list(data.demands.get(item_id, ()))
    for group in dependent:
        requirements.extend(group)
    requirements.sort(key=_BY_DUE)
    gross = [ZERO] * size
    for requirement in requirements:
        gross[requirement[0]] += requirement[2]

    receipts = sorted(data.receipts.get(item_id, ()))
    open_receipts = len(receipts)
    safety = item.safety_stock
    on_hand = data.on_hand.get(item_id, ZERO)
    lot = item.lot_size
    rule = lot.rule
    lead = item.lead_time
    source = item.source
    scheduled = [ZERO] * size
    net = [ZERO] * size
    planned = [ZERO] * size
    releases = [ZERO] * size
    projected = [ZERO] * size
    supplies: list[tuple[str, Decimal]] = [(ON_HAND, on_hand)] if on_hand > 0 else []
    orders: list[PlannedOrder] = []
    messages: list[ExceptionMessage] = []
    used = 0
    balance = on_hand
    for bucket in range(size):
        balance -= gross[bucket]
        while balance < safety and used < open_receipts:
            due, receipt_id, quantity = receipts[used]
            used += 1
            scheduled[bucket] += quantity
            balance += quantity
            supplies.append((receipt_id, quantity))
            if due == PAST_DUE:
                messages.append(
                    ExceptionMessage(
                        ExceptionKind.PAST_DUE, item_id, receipt_id, due, None, quantity
                    )
                )
            if due != bucket:
                kind = ExceptionKind.EXPEDITE if due > bucket else ExceptionKind.DEFER
                messages.append(ExceptionMessage(kind, item_id, receipt_id, due, bucket, quantity))
        if balance < safety:
            short = safety - balance
            net[bucket] = short
            if rule is LotRule.LOT_FOR_LOT:
                quantity = short
            elif rule is LotRule.PERIODS_OF_SUPPLY:
                # Every open receipt is used by now, so the next periods' need is their gross.
                quantity = sum(gross[bucket + 1 : bucket + lot.periods], short)
            else:
                quantity = lot.round(short)
            order_id = f"PLN/{item_id}/{bucket}"
            release = bucket - lead
            if release < 1:
                release = PAST_DUE
                messages.append(
                    ExceptionMessage(
                        ExceptionKind.PAST_DUE, item_id, order_id, bucket, None, quantity
                    )
                )
            planned[bucket] = quantity
            releases[release] += quantity
            balance += quantity
            orders.append(PlannedOrder(order_id, item_id, quantity, bucket, release, source))
            supplies.append((order_id, quantity))
        projected[bucket] = balance
    for due, receipt_id, quantity in receipts[used:]:
        messages.append(
            ExceptionMessage(ExceptionKind.CANCEL, item_id, receipt_id, due, None, quantity)
        )

    demands: list[tuple[str, Decimal]] = []
    if on_hand < 0:
        demands.append((NEGATIVE_ON_HAND, -on_hand))
    demands.extend((requirement[1], requirement[2]) for requirement in requirements)
    if safety > 0:
        demands.append((SAFETY_STOCK, safety))
    pegs = _peg(item_id, demands, supplies)

    components: dict[str, tuple[Requirement, ...]] = {}
    if orders:
        for component, factor in data.children.get(item_id, ()):
            components[component] = tuple(
                [
                    Requirement(
                        order.release,
                        order.id,
                        order.quantity * factor,
                        DemandKind.DEPENDENT,
                        item_id,
                    )
                    for order in orders
                ]
            )
    record = MrpRecord(
        item_id,
        data.low_level_codes[item_id],
        on_hand,
        safety,
        tuple(gross),
        tuple(scheduled),
        tuple(projected),
        tuple(net),
        tuple(planned),
        tuple(releases),
        tuple(requirements),
        tuple(orders),
        pegs,
        tuple(messages),
    )
    return record, components


def _peg(
    item_id: str, demands: list[tuple[str, Decimal]], supplies: list[tuple[str, Decimal]]
) -> tuple[Peg, ...]:
    """First-in first-out: supplies in availability order to demands in due order."""
    pegs: list[Peg] = []
    count = len(supplies)
    index = 0
    supply_id, left = supplies[0] if supplies else ("", ZERO)
    for demand_id, quantity in demands:
        need = quantity
        while need > left:  # this supply runs out: take what is left and go to the next
            if left:
                pegs.append(Peg(supply_id, demand_id, left))
                need -= left
            index += 1
            if index >= count:
                # The netting loop keeps supply >= demand + safety stock in every bucket.
                raise PlanningError(f"{item_id}: supply does not cover {demand_id} (engine bug)")
            supply_id, left = supplies[index]
        pegs.append(Peg(supply_id, demand_id, need))
        left -= need
    return tuple(pegs)


def _notify(progress: Progress | None, done: int, total: int, step: int) -> None:
    if progress is not None and (done % step == 0 or done == total):
        progress(done, total)


def regenerate(data: PlanningData, progress: Progress | None = None) -> MrpPlan:
    """Plan every item from scratch, in low-level-code order."""
    records: dict[str, MrpRecord] = {}
    dependent: dict[str, dict[str, tuple[Requirement, ...]]] = {}
    total = len(data.order)
    step = max(1, total // 100)
    empty: dict[str, tuple[Requirement, ...]] = {}
    for done, item in enumerate(data.order, 1):
        record, components = _plan_item(data, item, dependent.get(item, empty).values())
        records[item] = record
        for component, requirements in components.items():
            dependent.setdefault(component, {})[item] = requirements
        _notify(progress, done, total, step)
    return MrpPlan(data.buckets, records, dependent, tuple(data.order), data.children)


def net_change(
    previous: MrpPlan,
    data: PlanningData,
    changed: Iterable[str],
    progress: Progress | None = None,
) -> MrpPlan:
    """Re-plan the changed items and, level by level, the components whose demand changed.

    `data` is the previous run's data with the changes applied, and `changed` names every item
    whose own inputs changed (on hand, demands, receipts, planning data). Every other record is
    the previous plan's record, the same object. The result equals a regenerative run on `data`.
    """
    if previous.buckets != data.buckets:
        raise PlanningError("the buckets changed: run a regenerative plan")
    if previous.children is not data.children and previous.children != data.children:
        raise PlanningError("the BOM changed: run a regenerative plan")
    codes = data.low_level_codes
    queue: list[tuple[int, str]] = []
    queued: set[str] = set()
    for item in changed:
        if item not in data.items:
            raise PlanningError(f"unknown item {item!r}")
        if item not in queued:
            queued.add(item)
            queue.append((codes[item], item))
    heapq.heapify(queue)
    records = dict(previous.records)
    dependent = dict(previous.dependent)
    copied: dict[str, dict[str, tuple[Requirement, ...]]] = {}
    replanned: list[str] = []
    empty: Mapping[str, tuple[Requirement, ...]] = {}
    while queue:
        _, item = heapq.heappop(queue)
        record, components = _plan_item(data, item, dependent.get(item, empty).values())
        records[item] = record
        replanned.append(item)
        for component, _ in data.children.get(item, ()):
            new = components.get(component, ())
            old_by_parent = dependent.get(component, empty)
            if new == old_by_parent.get(item, ()):
                continue
            by_parent = copied.get(component)
            if by_parent is None:
                by_parent = copied[component] = dict(old_by_parent)
            if new:
                by_parent[item] = new
            else:
                by_parent.pop(item, None)
            # The same shape as a regenerative run's: no entry for a component nobody needs.
            if by_parent:
                dependent[component] = by_parent
            else:
                dependent.pop(component, None)
            if component not in queued:
                queued.add(component)
                heapq.heappush(queue, (codes[component], component))
        if progress is not None:
            progress(len(replanned), len(replanned) + len(queue))
    return MrpPlan(data.buckets, records, dependent, tuple(replanned), data.children)


def trace(plan: MrpPlan, item: str, demand: str) -> tuple[tuple[str, str], ...]:
    """The independent demands (item, id) a requirement serves, following pegs up the BOM.

    An independent demand traces to itself; a dependent requirement to the demands its parent's
    planned order is pegged to, and so on up to sales order lines, forecasts, work orders or a
    parent's safety stock.
    """
    found: set[tuple[str, str]] = set()
    stack = [(item, demand)]
    seen: set[tuple[str, str]] = set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        record = plan.records[current[0]]
        requirement = next((r for r in record.requirements if r.id == current[1]), None)
        if requirement is None or requirement.parent is None:
            found.add(current)
            continue
        parent = plan.records[requirement.parent]
        stack.extend((parent.item, peg.demand) for peg in parent.pegs if peg.supply == current[1])
    return tuple(sorted(found))
