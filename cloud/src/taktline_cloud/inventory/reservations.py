"""Reservations: stock of an item at a location held for one demand (pure).

A demand is a work order (its number, e.g. `WO-1001`: the reservation is for one of its
components) or a sales order line (`SO-1001/1`). A reservation is released (given back) or
consumed (turned into a stock move out of its location); what is neither is still open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from taktline_cloud.errors import Invalid

CONSUMPTION = "consumption"
"""Reason of the move that consumes a reservation."""

_SALES_LINE = re.compile(r"^(?P<order>\S{1,64})/(?P<line>[1-9]\d{0,5})$")
_WORK_ORDER = re.compile(r"^\S{1,64}$")


@dataclass(frozen=True, slots=True)
class SalesLineRef:
    """A sales order line as a demand."""

    order: str
    line: int


def parse_demand(demand: str) -> str | SalesLineRef:
    """A work order number, or the sales order line `ORDER/LINE`; Invalid otherwise."""
    if match := _SALES_LINE.match(demand):
        return SalesLineRef(match["order"], int(match["line"]))
    if "/" not in demand and _WORK_ORDER.match(demand):
        return demand
    raise Invalid(
        f"demand {demand!r}: a work order number (WO-1001) or a sales order line (SO-1001/1)"
    )


@dataclass(frozen=True, slots=True)
class Reservation:
    """A reservation as stored: `open` is still held, `consumed` went out as moves."""

    id: int
    item: str
    location: str
    demand: str
    quantity: Decimal
    open: Decimal
    consumed: Decimal
    created_at: datetime
    closed_at: datetime | None

    @property
    def released(self) -> Decimal:
        """What was given back without a move."""
        return self.quantity - self.open - self.consumed

    @property
    def status(self) -> str:
        """open | consumed | released (a partly consumed, then released one: released)."""
        if self.closed_at is None:
            return "open"
        return "consumed" if self.consumed == self.quantity else "released"
