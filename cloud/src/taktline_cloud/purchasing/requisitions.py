"""Purchase requisitions: a need for a bought item by a date, from an MRP plan or by hand.

From a plan, every planned order of a buy item becomes one requisition:

* the quantity is the planned order's quantity (MRP's lot sizing already applied); the
  supplier's minimum and pack size round it up again in the sourcing;
* the needed date is the first day of the planned order's due bucket, because MRP nets a
  bucket's receipts against the whole bucket's demand (a receipt must be in by its first day);
* the pegged demands are the planned order's pegs (requirement id and quantity, due order
  first), which is what alerts follow to the customer orders behind the requisition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum

from taktline_cloud.errors import Invalid
from taktline_cloud.planning.items import Source
from taktline_cloud.planning.mrp import MrpPlan
from taktline_cloud.purchasing.suppliers import Sourcing, Supplier, SupplierItem, choose_supplier


class RequisitionSource(StrEnum):
    """Where a requisition comes from."""

    MRP = "mrp"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class PeggedDemand:
    """`quantity` of the requisition's supply serves the item's requirement `demand`."""

    demand: str
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class Requisition:
    """A need for `quantity` of `item` by `needed`, with the supplier chosen for it (if any).

    `sourcing` is None when no supplier sells the item: the buyer must add one or source it
    by hand before the requisition can go on a purchase order.
    """

    id: str
    item: str
    quantity: Decimal
    needed: date
    source: RequisitionSource
    planned_order: str | None = None
    pegged: tuple[PeggedDemand, ...] = ()
    sourcing: Sourcing | None = None

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise Invalid(f"requisition {self.id}: quantity must be > 0")
        if (self.source is RequisitionSource.MRP) != (self.planned_order is not None):
            raise Invalid(f"requisition {self.id}: an MRP requisition names its planned order")


def requisition_id(planned_order: str) -> str:
    """The requisition id of an MRP planned order: stable across runs for the same order."""
    return f"REQ/{planned_order}"


def requisitions_from_plan(
    plan: MrpPlan,
    *,
    today: date,
    suppliers: Mapping[str, Supplier],
    supplier_items: Iterable[SupplierItem],
    rates: Mapping[str, Decimal] | None = None,
) -> list[Requisition]:
    """One sourced requisition per planned order of a buy item, in item then due order."""
    offers = list(supplier_items)
    requisitions: list[Requisition] = []
    for item in sorted(plan.records):
        record = plan.records[item]
        for order in record.planned_orders:
            if order.source is not Source.BUY:
                continue
            needed = plan.buckets.first_day(order.due)
            pegged = tuple(
                PeggedDemand(peg.demand, peg.quantity)
                for peg in record.pegs
                if peg.supply == order.id
            )
            sourcing = choose_supplier(
                item,
                order.quantity,
                needed,
                today=today,
                suppliers=suppliers,
                supplier_items=offers,
                rates=rates,
            )
            requisitions.append(
                Requisition(
                    requisition_id(order.id),
                    item,
                    order.quantity,
                    needed,
                    RequisitionSource.MRP,
                    order.id,
                    pegged,
                    sourcing,
                )
            )
    return requisitions


def manual_requisition(
    id: str,
    item: str,
    quantity: Decimal,
    needed: date,
    *,
    today: date,
    suppliers: Mapping[str, Supplier],
    supplier_items: Iterable[SupplierItem],
    rates: Mapping[str, Decimal] | None = None,
) -> Requisition:
    """A requisition a buyer enters by hand, sourced by the same rule; it pegs no demand."""
    sourcing = choose_supplier(
        item,
        quantity,
        needed,
        today=today,
        suppliers=suppliers,
        supplier_items=supplier_items,
        rates=rates,
    )
    return Requisition(id, item, quantity, needed, RequisitionSource.MANUAL, sourcing=sourcing)
