"""Supplier confirmations: the supplier confirms or changes each line's date and quantity.

A confirmation covers the whole order: lines it does not mention keep their current promise
(the ordered date and quantity on a first confirmation). Each line's change is measured against
its previous promise (the last confirmation, else the order): later or earlier by days, shorter
or longer by a quantity. The order becomes `changed` when any line now differs from what was
ordered and `confirmed` otherwise, so a supplier that first moves a date and then confirms the
original one brings the order back to `confirmed`. After a first receipt the order stays
`partially-received`; the supplier may still move open lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from taktline_cloud.errors import Conflict, Invalid
from taktline_cloud.purchasing.orders import (
    PoLine,
    PoStatus,
    PurchaseOrder,
    require_aware,
    transition,
)


class DateChange(StrEnum):
    """How a line's expected date moved."""

    SAME = "same"
    EARLIER = "earlier"
    LATER = "later"


class QuantityChange(StrEnum):
    """How a line's expected quantity moved."""

    SAME = "same"
    SHORTER = "shorter"
    LONGER = "longer"


@dataclass(frozen=True, slots=True)
class LineAnswer:
    """The supplier's answer for one line; None keeps the current date or quantity."""

    date: date | None = None
    quantity: Decimal | None = None


@dataclass(frozen=True, slots=True)
class LineChange:
    """What a confirmation did to one line, against the line's previous promise."""

    line: int
    item: str
    previous_date: date
    date: date
    previous_quantity: Decimal
    quantity: Decimal

    @property
    def date_change(self) -> DateChange:
        """Later, earlier or the same date."""
        if self.date > self.previous_date:
            return DateChange.LATER
        if self.date < self.previous_date:
            return DateChange.EARLIER
        return DateChange.SAME

    @property
    def days(self) -> int:
        """Days moved: positive later, negative earlier."""
        return (self.date - self.previous_date).days

    @property
    def quantity_change(self) -> QuantityChange:
        """Shorter, longer or the same quantity."""
        if self.quantity < self.previous_quantity:
            return QuantityChange.SHORTER
        if self.quantity > self.previous_quantity:
            return QuantityChange.LONGER
        return QuantityChange.SAME

    @property
    def delta(self) -> Decimal:
        """Quantity moved: negative shorter, positive longer."""
        return self.quantity - self.previous_quantity

    @property
    def changed(self) -> bool:
        """True when the date or the quantity moved."""
        return self.days != 0 or self.delta != 0


@dataclass(frozen=True, slots=True)
class Confirmation:
    """The order after the supplier's confirmation, and what changed on each line."""

    order: PurchaseOrder
    changes: tuple[LineChange, ...]

    @property
    def changed(self) -> tuple[LineChange, ...]:
        """Only the lines whose date or quantity moved."""
        return tuple(change for change in self.changes if change.changed)


def confirm(order: PurchaseOrder, answers: Mapping[int, LineAnswer], at: datetime) -> Confirmation:
    """Apply the supplier's answers to the order (module rule); Conflict if it cannot take them."""
    require_aware(at, f"confirming {order.number}")
    for number in answers:
        order.line(number)  # NotFound for a line the order does not have
    lines: list[PoLine] = []
    changes: list[LineChange] = []
    for line in order.lines:
        answer = answers.get(line.number, LineAnswer())
        new_date = line.expected_date if answer.date is None else answer.date
        quantity = line.agreed_quantity if answer.quantity is None else answer.quantity
        if quantity < 0:
            raise Invalid(f"{order.number} line {line.number}: quantity must be >= 0")
        if answer != LineAnswer() and line.receipts and line.fully_received:
            raise Conflict(f"{order.number} line {line.number} is fully received")
        if quantity < line.received:
            raise Conflict(
                f"{order.number} line {line.number}: cannot confirm {quantity}, "
                f"{line.received} already received"
            )
        changes.append(
            LineChange(
                line.number, line.item, line.expected_date, new_date, line.agreed_quantity, quantity
            )
        )
        lines.append(replace(line, confirmed_date=new_date, confirmed_quantity=quantity))
    if order.status is PoStatus.PARTIALLY_RECEIVED:
        target = PoStatus.PARTIALLY_RECEIVED
    elif any(line.deviates for line in lines):
        target = PoStatus.CHANGED
    else:
        target = PoStatus.CONFIRMED
    status = transition(order.number, order.status, target)
    confirmed = replace(order, status=status, lines=tuple(lines), confirmed_at=at)
    return Confirmation(confirmed, tuple(changes))
