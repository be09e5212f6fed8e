"""Receipts: goods received on a purchase order line into a lot.

Over-receipt tolerance: a line may receive in total up to its agreed quantity (the confirmed
one, else the ordered one) x (1 + the order's tolerance), copied from the supplier when the
order was drafted; suppliers ship full packs and scales differ, so a little more is accepted,
never more than that. A line is fully received (closed) once its agreed quantity is in, and
takes no further receipt: an extra within tolerance must come with the receipt that completes
the line. The order becomes `received` when every line is, `partially-received` before.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from taktline_cloud.errors import Conflict, Invalid
from taktline_cloud.inventory.quantities import display
from taktline_cloud.purchasing.orders import (
    LotReceipt,
    PoStatus,
    PurchaseOrder,
    require_aware,
    transition,
)


@dataclass(frozen=True, slots=True)
class Receipt:
    """A receipt to post to stock: `quantity` of `item` into `lot`, from a PO line."""

    order: str
    line: int
    item: str
    quantity: Decimal
    unit_price: Decimal
    lot: str
    received_at: datetime
    line_closed: bool


def receivable(order: PurchaseOrder, line_number: int) -> Decimal:
    """The most the line can still take within the order's over-receipt tolerance."""
    line = order.line(line_number)
    if line.fully_received:
        return Decimal(0)
    ceiling = line.agreed_quantity * (1 + order.over_receipt_tolerance)
    return ceiling - line.received


def receive(
    order: PurchaseOrder, line_number: int, quantity: Decimal, lot: str, received_at: datetime
) -> tuple[PurchaseOrder, Receipt]:
    """Receive `quantity` on a line into `lot` (module rule); the order after it and the receipt."""
    require_aware(received_at, f"receiving on {order.number}")
    if quantity <= 0:
        raise Invalid(f"{order.number} line {line_number}: received quantity must be > 0")
    if not lot.strip():
        raise Invalid(f"{order.number} line {line_number}: a receipt needs a lot number")
    line = order.line(line_number)
    # Check the status first so a draft or cancelled order is refused as such.
    status = transition(order.number, order.status, PoStatus.PARTIALLY_RECEIVED)
    if line.fully_received:
        raise Conflict(f"{order.number} line {line_number} is fully received")
    room = receivable(order, line_number)
    if quantity > room:
        tolerance = display(order.over_receipt_tolerance * 100)
        raise Conflict(
            f"{order.number} line {line_number}: receiving {display(quantity)} would exceed "
            f"the agreed {display(line.agreed_quantity)} by more than the {tolerance} % "
            f"tolerance (at most {display(room)} more)"
        )
    received_line = replace(line, receipts=(*line.receipts, LotReceipt(lot, quantity, received_at)))
    lines = tuple(received_line if other.number == line_number else other for other in order.lines)
    if all(other.fully_received for other in lines):
        status = transition(order.number, order.status, PoStatus.RECEIVED)
    receipt = Receipt(
        order.number,
        line_number,
        line.item,
        quantity,
        line.unit_price,
        lot,
        received_at,
        received_line.fully_received,
    )
    return replace(order, status=status, lines=lines), receipt
