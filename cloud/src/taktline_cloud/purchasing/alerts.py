"""Supply alerts: a late or short confirmation or delivery, and the customer orders it hits.

Which demands a shortfall hits follows MRP's first-in first-out pegging: the supply serves its
pegged demands in due order, so what arrives in time serves the earliest demands and what is
missing falls on the latest ones (a lot-size or pack-size excess that nothing is pegged to is
lost first). A dependent demand's shortfall of `m` component units leaves its parent's planned
order `m / factor` short (the BOM factor, scrap included), which the parent's pegs spread the
same way, up to sales order lines, forecasts, work orders or safety stock — the quantity-aware
form of `planning.mrp.trace`.

The supply a line is pegged as: its scheduled receipt (`orders.receipt_id`) in a plan run
after the order existed, else the planned order its requisition came from, else the pegs kept
on the line. A scheduled receipt stands for the line's open quantity; a planned order for the
whole line. A short confirmation is judged against what the line was ordered for: the pegs kept
on it (an approved planned order's), else as above — a plan run after the confirmation already
counts only the confirmed quantity as the receipt, so its pegs never miss the shortfall.

Alerts, per line of an open order:

* late confirmation: the confirmed date is after the needed date; days = confirmed - needed,
  the open quantity is late;
* short confirmation: the confirmed quantity is below the ordered one, by the difference;
* late delivery (nothing received) or short delivery (some received): the expected date
  (confirmed, else needed) is before today with quantity open; days = today - expected.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum

from taktline_cloud.inventory.quantities import display
from taktline_cloud.planning.mrp import DemandKind, MrpPlan
from taktline_cloud.purchasing.orders import OPEN, PoLine, PoStatus, PurchaseOrder, receipt_id
from taktline_cloud.purchasing.suppliers import ZERO


class AlertKind(StrEnum):
    """What went wrong with a purchase order line."""

    LATE_CONFIRMATION = "late-confirmation"
    SHORT_CONFIRMATION = "short-confirmation"
    LATE_DELIVERY = "late-delivery"
    SHORT_DELIVERY = "short-delivery"


@dataclass(frozen=True, slots=True)
class AffectedDemand:
    """`quantity` of demand `demand` of `item` will not be served in time by the line.

    `kind` is None for a planning demand that is no order: safety stock, a negative on hand.
    """

    item: str
    demand: str
    kind: DemandKind | None
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class SupplyAlert:
    """A purchase order line that will not bring what the plan counts on, and who suffers."""

    kind: AlertKind
    order: str
    line: int
    item: str
    needed: date
    expected: date
    days: int  # late confirmation: confirmed - needed; late/short delivery: days overdue
    quantity: Decimal  # the quantity late or short
    affected: tuple[AffectedDemand, ...]

    @property
    def customer_orders(self) -> tuple[AffectedDemand, ...]:
        """The affected sales order lines."""
        return tuple(a for a in self.affected if a.kind is DemandKind.SALES)

    @property
    def message(self) -> str:
        """One sentence for a planner: what happened and whom it hits."""
        what = {
            AlertKind.LATE_CONFIRMATION: f"confirmed {self.expected}, {self.days} days after "
            f"the needed {self.needed}",
            AlertKind.SHORT_CONFIRMATION: f"confirmed {display(self.quantity)} short",
            AlertKind.LATE_DELIVERY: f"{display(self.quantity)} not delivered, "
            f"{self.days} days past {self.expected}",
            AlertKind.SHORT_DELIVERY: f"{display(self.quantity)} still open, "
            f"{self.days} days past {self.expected}",
        }[self.kind]
        hits = ", ".join(
            f"{a.demand} ({a.item}: {display(a.quantity)})" for a in self.customer_orders
        )
        return f"{self.order} line {self.line} ({self.item}): {what}; affects {hits or 'no order'}"


def confirmation_alerts(plan: MrpPlan, order: PurchaseOrder) -> list[SupplyAlert]:
    """Late and short confirmations of an open order's lines."""
    alerts: list[SupplyAlert] = []
    if order.status not in OPEN:
        return alerts
    for line in order.lines:
        if line.confirmed_date is None:
            continue
        days = (line.expected_date - line.needed).days
        if days > 0 and line.open_quantity > 0:
            affected = affected_demands(plan, order, line, in_time=line.received)
            alerts.append(_alert(AlertKind.LATE_CONFIRMATION, order, line, days, affected=affected))
        short = line.quantity - line.agreed_quantity
        if short > 0:
            affected = affected_demands(
                plan, order, line, in_time=line.agreed_quantity, as_ordered=True
            )
            kind = AlertKind.SHORT_CONFIRMATION
            alerts.append(_alert(kind, order, line, 0, affected=affected, quantity=short))
    return alerts


def delivery_alerts(plan: MrpPlan, order: PurchaseOrder, today: date) -> list[SupplyAlert]:
    """Lines of a sent order past their expected date with quantity open."""
    alerts: list[SupplyAlert] = []
    if order.status not in OPEN or order.status is PoStatus.DRAFT:
        return alerts
    for line in order.lines:
        days = (today - line.expected_date).days
        if days > 0 and line.open_quantity > 0:
            kind = AlertKind.SHORT_DELIVERY if line.received > 0 else AlertKind.LATE_DELIVERY
            affected = affected_demands(plan, order, line, in_time=line.received)
            alerts.append(_alert(kind, order, line, days, affected=affected))
    return alerts


def _alert(
    kind: AlertKind,
    order: PurchaseOrder,
    line: PoLine,
    days: int,
    *,
    affected: tuple[AffectedDemand, ...],
    quantity: Decimal | None = None,
) -> SupplyAlert:
    return SupplyAlert(
        kind,
        order.number,
        line.number,
        line.item,
        line.needed,
        line.expected_date,
        days,
        line.open_quantity if quantity is None else quantity,
        affected,
    )


def affected_demands(
    plan: MrpPlan,
    order: PurchaseOrder,
    line: PoLine,
    in_time: Decimal,
    *,
    as_ordered: bool = False,
) -> tuple[AffectedDemand, ...]:
    """The independent demands left short when only `in_time` of the line arrives in time.

    `in_time` counts from the start of the line (received quantity included); see the module
    docstring for the supply the line is pegged as (`as_ordered`: the pegs kept on the line
    first, what a short confirmation is judged against).
    """
    record = plan.records.get(line.item)
    pegs: Sequence[tuple[str, Decimal]] = ()
    available = in_time
    if as_ordered and line.pegged:
        pegs = [(p.demand, p.quantity) for p in line.pegged]
    elif record is not None:
        receipt = receipt_id(order, line)
        pegs = [(p.demand, p.quantity) for p in record.pegs if p.supply == receipt]
        if pegs:
            # The plan's receipt is the open quantity: what was received is not part of it.
            available = in_time - line.received
        elif line.planned_order is not None:
            pegs = [(p.demand, p.quantity) for p in record.pegs if p.supply == line.planned_order]
    if not pegs:
        pegs = [(p.demand, p.quantity) for p in line.pegged]
    found: dict[tuple[str, str], Decimal] = {}
    kinds: dict[tuple[str, str], DemandKind | None] = {}
    _spread(plan, line.item, pegs, available, found=found, kinds=kinds)
    return tuple(
        AffectedDemand(item, demand, kinds[item, demand], quantity)
        for (item, demand), quantity in sorted(found.items())
    )


def _spread(
    plan: MrpPlan,
    item: str,
    pegs: Sequence[tuple[str, Decimal]],
    available: Decimal,
    *,
    found: dict[tuple[str, str], Decimal],
    kinds: dict[tuple[str, str], DemandKind | None],
) -> None:
    """Serve `pegs` in order from `available`; follow each shortfall up to its demand."""
    record = plan.records.get(item)
    requirements = {r.id: r for r in record.requirements} if record is not None else {}
    left = max(available, ZERO)
    for demand, quantity in pegs:
        served = min(quantity, left)
        left -= served
        missing = quantity - served
        if missing <= 0:
            continue
        requirement = requirements.get(demand)
        parent = None if requirement is None else requirement.parent
        parent_record = None if parent is None else plan.records.get(parent)
        order = None
        if parent_record is not None:
            order = next((o for o in parent_record.planned_orders if o.id == demand), None)
        if parent is None or parent_record is None or order is None:
            # An independent demand (or safety stock): the end of the trace.
            key = (item, demand)
            found[key] = found.get(key, ZERO) + missing
            kinds[key] = _kind(demand) if requirement is None else requirement.kind
            continue
        factor = dict(plan.children[parent])[item]
        parent_pegs = [(p.demand, p.quantity) for p in parent_record.pegs if p.supply == demand]
        parent_available = order.quantity - missing / factor
        _spread(plan, parent, parent_pegs, parent_available, found=found, kinds=kinds)


_SALES_LINE = re.compile(r"^[^/\s]+/\d+$")


def _kind(demand: str) -> DemandKind | None:
    """A demand the plan does not know (pegs kept on a line, no plan): a sales order line by
    its id's form (SO-1001/1: `planning_runs.sales_demand_id`); otherwise unknown."""
    return DemandKind.SALES if _SALES_LINE.match(demand) else None
