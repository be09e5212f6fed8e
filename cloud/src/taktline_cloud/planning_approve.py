"""Approving an MRP suggestion: a buy order becomes a draft purchase order, a make order a work
order in status created.

Planned order ids (PLN/{item}/{bucket}) name a bucket of the run that made them, so they are not
stable across runs: the same id in tomorrow's run is another order. An approval is therefore
keyed by the latest run's id and the planned order's id, and that key is written into the
document it creates, so approving twice finds the first document instead of making a second:

* buy: the requisition id of the purchase order line is `MRP/{run}/{planned order}`;
* make: the work order number is `MRP{run}-{planned order with / as -}`.

No table of its own: the document is the record of the approval. Both services run on the
cloud's single database worker thread and the whole approval is one call there, so two
approvals of one order in this process run one after the other (the second finds the first).

A buy order's purchase order line keeps the planned order's id and its pegs (the demands it
serves in the run, as /api/mrp/pegging shows them), as a requisition from a plan does: supply
alerts of the line follow them to the customer orders behind it until a run plans the order's
own scheduled receipt (which MRP pegs to the same demands).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from taktline_cloud.errors import Conflict, NotFound
from taktline_cloud.events import Event
from taktline_cloud.purchasing.orders import PoStatus, PurchaseOrder
from taktline_cloud.purchasing.requisitions import PeggedDemand
from taktline_cloud.purchasing.suppliers import SupplierItem
from taktline_cloud.purchasing_service import BUYER, PurchasingService, RequisitionInput
from taktline_cloud.readmodels import PlannedOrderRow
from taktline_cloud.service import PlantService

DocumentKind = Literal["purchase_order", "work_order"]


@dataclass(frozen=True, slots=True)
class Approval:
    """The document an approved planned order became (`created`: False when it already was)."""

    run: int
    planned_order: PlannedOrderRow
    document: DocumentKind
    number: str
    created: bool


def requisition_key(run: int, planned_order: str) -> str:
    """The requisition id a buy order's approval gives its purchase order line."""
    return f"MRP/{run}/{planned_order}"


def work_order_number(run: int, planned_order: str) -> str:
    """The work order number a make order's approval creates (no slash: it is a URL segment)."""
    return f"MRP{run}-{planned_order.replace('/', '-')}"


def approve(
    plant: PlantService, purchasing: PurchasingService, planned_order: str
) -> tuple[Approval, list[Event]]:
    """Turn `planned_order` of the latest MRP run into its document, or find the one it already
    became; with the live events of a created work order. NotFound: no run, or no such planned
    order in it; Conflict: no supplier sells a buy order's item, or no line to make on."""
    run = plant.mrp_latest_run()
    found = [row for row in plant.mrp_planned_orders() if row.id == planned_order]
    if not found:
        raise NotFound(f"no planned order {planned_order!r} in MRP run {run.id}")
    (row,) = found
    if row.kind == "buy":
        return _approve_buy(plant, purchasing, run.id, row), []
    return _approve_make(plant, run.id, row)


def _pegs(plant: PlantService, row: PlannedOrderRow) -> tuple[PeggedDemand, ...]:
    """The planned order's pegs in the latest run (none: lot-size excess only)."""
    try:
        pegging = plant.mrp_pegging(row.id, row.item)
    except NotFound:
        return ()
    return tuple(PeggedDemand(peg.demand, Decimal(peg.quantity)) for peg in pegging.pegs)


def _approve_buy(
    plant: PlantService, purchasing: PurchasingService, run: int, row: PlannedOrderRow
) -> Approval:
    key = requisition_key(run, row.id)
    existing = _order_with_requisition(purchasing.orders(BUYER, item=row.item), key)
    if existing is not None:
        return Approval(run, row, "purchase_order", existing.number, created=False)
    if not any(offer.item == row.item for offer in _offers(purchasing)):
        raise Conflict(f"no supplier sells {row.item}: add one (PUT /api/suppliers/.../items)")
    wanted = RequisitionInput(
        row.item,
        Decimal(row.quantity),
        row.due_date,
        key,
        planned_order=row.id,
        pegged=_pegs(plant, row),
    )
    orders = purchasing.draft([wanted], actor=BUYER)
    created = _order_with_requisition(orders, key)
    if created is None:  # draft_orders puts every requisition on an order
        raise RuntimeError(f"drafting {key} made no order line for it")
    return Approval(run, row, "purchase_order", created.number, created=True)


def _offers(purchasing: PurchasingService) -> list[SupplierItem]:
    """What every supplier sells."""
    return [o for s in purchasing.suppliers(BUYER) for o in purchasing.supplier_items(s.code)]


def _order_with_requisition(orders: list[PurchaseOrder], key: str) -> PurchaseOrder | None:
    """The order (not cancelled) with a line for requisition `key`, if any."""
    for order in orders:
        if order.status is PoStatus.CANCELLED:
            continue
        if any(line.requisition == key for line in order.lines):
            return order
    return None


def _approve_make(
    plant: PlantService, run: int, row: PlannedOrderRow
) -> tuple[Approval, list[Event]]:
    number = work_order_number(run, row.id)
    try:
        plant.work_order(number)
    except NotFound:
        pass
    else:
        return Approval(run, row, "work_order", number, created=False), []
    line = _line_for(plant, row.item)
    _, events = plant.create_work_order(row.item, Decimal(row.quantity), line, number)
    return Approval(run, row, "work_order", number, created=True), events


def _line_for(plant: PlantService, item: str) -> str:
    """A line that makes the item by the master data's routes: the one of the item's latest
    work order when it is one of them, else the first in code order (an item with no routes
    can be made on every line)."""
    lines = plant.item_lines(item)
    if not lines:
        raise Conflict(f"the plant has no line to make {item} on")
    made = [wo.line for wo in plant.work_orders() if wo.item == item and wo.line in lines]
    return made[-1] if made else lines[0]
