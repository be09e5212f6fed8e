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

What the purchasing service's API does not allow yet: a draft from a *manual* requisition keeps
no pegs, so the purchase order line does not carry the planned order's pegs (alerts of that line
then name no customer order); the pegs stay readable at /api/mrp/pegging for the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from taktline_cloud.errors import Conflict, NotFound
from taktline_cloud.events import Event
from taktline_cloud.purchasing.orders import PoStatus, PurchaseOrder
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
        return _approve_buy(purchasing, run.id, row), []
    return _approve_make(plant, run.id, row)


def _approve_buy(purchasing: PurchasingService, run: int, row: PlannedOrderRow) -> Approval:
    key = requisition_key(run, row.id)
    existing = _order_with_requisition(purchasing.orders(BUYER, item=row.item), key)
    if existing is not None:
        return Approval(run, row, "purchase_order", existing.number, created=False)
    if not any(offer.item == row.item for offer in _offers(purchasing)):
        raise Conflict(f"no supplier sells {row.item}: add one (PUT /api/suppliers/.../items)")
    wanted = RequisitionInput(row.item, Decimal(row.quantity), row.due_date, key)
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
    """The line of the item's latest work order; else the plant's first line (the master data
    does not say which line makes what yet)."""
    made = [wo.line for wo in plant.work_orders() if wo.item == item]
    if made:
        return made[-1]
    lines = sorted({machine.line for machine in plant.machines()})
    if not lines:
        raise Conflict(f"the plant has no line to make {item} on")
    return lines[0]
