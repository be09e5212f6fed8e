"""Purchase orders: the status table, lines, drafting from requisitions, and MRP's view of them.

Drafting groups sourced requisitions by supplier and by order window: a requisition's window is
the `window_days`-long period (counted from `today`) in which its order-by date falls, an
order-by date already past counting as today. So requisitions a supplier must get this week go
on one order, next week's on another. Each requisition becomes one line of its own (never
merged with another of the same item): a line keeps its requisition's needed date and pegging,
and the supplier confirms line by line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final

from taktline_cloud.errors import Conflict, Invalid, NotFound
from taktline_cloud.planning.mrp import ReceiptKind, ScheduledReceipt
from taktline_cloud.purchasing.requisitions import PeggedDemand, Requisition
from taktline_cloud.purchasing.suppliers import ZERO, Supplier


class PoStatus(StrEnum):
    """The state of a purchase order."""

    DRAFT = "draft"
    SENT = "sent"
    CONFIRMED = "confirmed"  # the supplier confirmed every line as asked
    CHANGED = "changed"  # the supplier confirmed, with another date or quantity on some line
    PARTIALLY_RECEIVED = "partially-received"
    RECEIVED = "received"
    CLOSED = "closed"
    CANCELLED = "cancelled"


_S = PoStatus

TRANSITIONS: Final[dict[PoStatus, frozenset[PoStatus]]] = {
    _S.DRAFT: frozenset({_S.SENT, _S.CANCELLED}),
    _S.SENT: frozenset({_S.CONFIRMED, _S.CHANGED, _S.CANCELLED}),
    # A supplier may confirm again (a new date) until goods arrive; receipts need a confirmation
    # (a buyer can confirm on the supplier's behalf when goods come unannounced).
    _S.CONFIRMED: frozenset(
        {_S.CONFIRMED, _S.CHANGED, _S.PARTIALLY_RECEIVED, _S.RECEIVED, _S.CANCELLED}
    ),
    _S.CHANGED: frozenset(
        {_S.CONFIRMED, _S.CHANGED, _S.PARTIALLY_RECEIVED, _S.RECEIVED, _S.CANCELLED}
    ),
    # Once goods came, the order is closed short, not cancelled; the supplier may still move
    # the open lines' dates (the order stays partially received).
    _S.PARTIALLY_RECEIVED: frozenset({_S.PARTIALLY_RECEIVED, _S.RECEIVED, _S.CLOSED}),
    _S.RECEIVED: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
    _S.CANCELLED: frozenset(),
}
"""Allowed transitions: the only place that decides whether a status change is legal."""

OPEN: Final = frozenset({_S.DRAFT, _S.SENT, _S.CONFIRMED, _S.CHANGED, _S.PARTIALLY_RECEIVED})
"""States in which an order's open lines are still expected (scheduled receipts for MRP)."""


def transition(number: str, current: PoStatus, target: PoStatus) -> PoStatus:
    """Return `target` if `current` → `target` is allowed; raise Conflict otherwise."""
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none"
        raise Conflict(
            f"purchase order {number} is {current}: cannot become {target} (allowed: {allowed})"
        )
    return target


def require_aware(at: datetime, what: str) -> None:
    """Refuse a naive timestamp: purchasing records aware UTC instants."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise Invalid(f"{what}: naive datetime, expected an aware UTC datetime")


@dataclass(frozen=True, slots=True)
class LotReceipt:
    """`quantity` received into lot `lot` at `received_at`."""

    lot: str
    quantity: Decimal
    received_at: datetime


@dataclass(frozen=True, slots=True)
class PoLine:
    """A line: `quantity` of `item` wanted by `needed`, and what the supplier said and sent.

    `requested` is the requisition's need before the supplier's pack rounding; the agreed
    quantity and date are the supplier's confirmation once there is one, else the order's.
    """

    number: int
    item: str
    quantity: Decimal
    unit_price: Decimal
    needed: date
    requisition: str
    requested: Decimal
    planned_order: str | None = None
    pegged: tuple[PeggedDemand, ...] = ()
    confirmed_date: date | None = None
    confirmed_quantity: Decimal | None = None
    receipts: tuple[LotReceipt, ...] = ()

    @property
    def agreed_quantity(self) -> Decimal:
        """The confirmed quantity, else the ordered one."""
        return self.quantity if self.confirmed_quantity is None else self.confirmed_quantity

    @property
    def expected_date(self) -> date:
        """The confirmed date, else the needed date."""
        return self.needed if self.confirmed_date is None else self.confirmed_date

    @property
    def received(self) -> Decimal:
        """Everything received on the line so far."""
        return sum((r.quantity for r in self.receipts), ZERO)

    @property
    def open_quantity(self) -> Decimal:
        """What is still to come (never negative)."""
        return max(self.agreed_quantity - self.received, ZERO)

    @property
    def fully_received(self) -> bool:
        """True once the agreed quantity is in: the line takes no more receipts."""
        return self.received >= self.agreed_quantity

    @property
    def deviates(self) -> bool:
        """True when the confirmation differs from what was ordered (date or quantity)."""
        return self.agreed_quantity != self.quantity or self.expected_date != self.needed


@dataclass(frozen=True, slots=True)
class PurchaseOrder:
    """A purchase order to one supplier, in its currency, with its lines."""

    number: str
    supplier: str
    currency: str
    status: PoStatus
    order_date: date  # the day it is to be sent: the start of its order window
    lines: tuple[PoLine, ...]
    created_at: datetime
    over_receipt_tolerance: Decimal = ZERO
    sent_at: datetime | None = None
    confirmed_at: datetime | None = None
    closed_at: datetime | None = None

    def line(self, number: int) -> PoLine:
        """The line numbered `number` (NotFound otherwise)."""
        for line in self.lines:
            if line.number == number:
                return line
        raise NotFound(f"purchase order {self.number} has no line {number}")

    @property
    def amount(self) -> Decimal:
        """The order's value at its ordered quantities."""
        return sum((line.quantity * line.unit_price for line in self.lines), ZERO)

    def sent(self, at: datetime) -> PurchaseOrder:
        """This draft, sent to the supplier at `at`."""
        require_aware(at, f"sending {self.number}")
        return replace(self, status=transition(self.number, self.status, _S.SENT), sent_at=at)

    def cancelled(self, at: datetime) -> PurchaseOrder:
        """This order cancelled (only before any goods arrived)."""
        require_aware(at, f"cancelling {self.number}")
        status = transition(self.number, self.status, _S.CANCELLED)
        return replace(self, status=status, closed_at=at)

    def closed(self, at: datetime) -> PurchaseOrder:
        """This order closed: fully received, or closed short and nothing more expected."""
        require_aware(at, f"closing {self.number}")
        status = transition(self.number, self.status, _S.CLOSED)
        return replace(self, status=status, closed_at=at)


def draft_orders(
    requisitions: Iterable[Requisition],
    suppliers: Mapping[str, Supplier],
    *,
    today: date,
    window_days: int,
    numbers: Iterator[str],
    created_at: datetime,
) -> list[PurchaseOrder]:
    """Draft orders from sourced requisitions, one per supplier and order window (module rule).

    Orders come out by order date then supplier; lines by needed date then requisition id.
    """
    if window_days < 1:
        raise Invalid("the order window must be at least one day")
    require_aware(created_at, "drafting purchase orders")
    groups: dict[tuple[date, str], list[Requisition]] = {}
    for requisition in requisitions:
        sourcing = requisition.sourcing
        if sourcing is None:
            raise Invalid(f"requisition {requisition.id}: no supplier sells {requisition.item}")
        if sourcing.supplier not in suppliers:
            raise Invalid(f"requisition {requisition.id}: unknown supplier {sourcing.supplier}")
        window = max((sourcing.order_by - today).days, 0) // window_days
        order_date = today + timedelta(days=window * window_days)
        groups.setdefault((order_date, sourcing.supplier), []).append(requisition)
    orders: list[PurchaseOrder] = []
    for (order_date, code), members in sorted(groups.items()):
        supplier = suppliers[code]
        members.sort(key=lambda r: (r.needed, r.id))
        lines = tuple(_line(number, r) for number, r in enumerate(members, 1))
        orders.append(
            PurchaseOrder(
                number=next(numbers),
                supplier=code,
                currency=supplier.currency,
                status=_S.DRAFT,
                order_date=order_date,
                lines=lines,
                created_at=created_at,
                over_receipt_tolerance=supplier.over_receipt_tolerance,
            )
        )
    return orders


def _line(number: int, requisition: Requisition) -> PoLine:
    sourcing = requisition.sourcing
    assert sourcing is not None  # checked by draft_orders
    return PoLine(
        number=number,
        item=requisition.item,
        quantity=sourcing.quantity,
        unit_price=sourcing.unit_price,
        needed=requisition.needed,
        requisition=requisition.id,
        requested=requisition.quantity,
        planned_order=requisition.planned_order,
        pegged=requisition.pegged,
    )


def receipt_id(order: PurchaseOrder, line: PoLine) -> str:
    """The id of a line as a scheduled receipt in MRP (and of the supply its pegs name)."""
    return f"{order.number}/{line.number}"


def scheduled_receipts(orders: Iterable[PurchaseOrder]) -> list[ScheduledReceipt]:
    """Open lines of open orders as MRP scheduled receipts: open quantity by expected date.

    Drafts count too, so a re-run of MRP does not plan again what is about to be ordered.
    """
    receipts: list[ScheduledReceipt] = []
    for order in orders:
        if order.status not in OPEN:
            continue
        for line in order.lines:
            if line.open_quantity > 0:
                receipts.append(
                    ScheduledReceipt(
                        receipt_id(order, line),
                        line.item,
                        line.expected_date,
                        line.open_quantity,
                        ReceiptKind.PURCHASE_ORDER,
                    )
                )
    return receipts
