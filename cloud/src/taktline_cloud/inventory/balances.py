"""On-hand, reserved and available stock of one item at one location, and the rules they obey
(pure).

Internal locations refuse negative stock: a move out of one may take at most what is on hand
and not reserved for a demand. Virtual locations (supplier, customer, production, inventory
adjustment) allow it, since they stand for the world outside the stores. Posting a PLC count is
the exception that is booked anyway (see `service.PlantService._post`): the material was used.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from taktline_cloud.errors import Conflict
from taktline_cloud.inventory.quantities import display

NEGATIVE_BY_DEFAULT: frozenset[str] = frozenset(
    {"supplier", "customer", "production", "scrap", "inventory"}
)
"""Location kinds that allow negative stock unless the plant file says otherwise."""


def allows_negative_by_default(kind: str) -> bool:
    """True for the virtual kinds: stock there may go below zero."""
    return kind in NEGATIVE_BY_DEFAULT


@dataclass(frozen=True, slots=True)
class Balance:
    """Stock of one item at one location; available = on hand - reserved."""

    item: str
    location: str
    on_hand: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)

    @property
    def available(self) -> Decimal:
        """What is on hand and not reserved for a demand."""
        return self.on_hand - self.reserved

    def check_outflow(self, quantity: Decimal) -> None:
        """Conflict when taking `quantity` out would go below zero or into reserved stock."""
        if quantity > self.on_hand:
            raise Conflict(
                f"not enough {self.item} at {self.location}: {display(self.on_hand)} on hand,"
                f" {display(quantity)} requested (the location does not allow negative stock)"
            )
        if quantity > self.available:
            raise Conflict(
                f"not enough unreserved {self.item} at {self.location}:"
                f" {display(self.on_hand)} on hand of which {display(self.reserved)} reserved,"
                f" {display(quantity)} requested"
            )

    def check_reservation(self, quantity: Decimal) -> None:
        """Conflict when reserving `quantity` more would exceed what is available."""
        if quantity > self.available:
            raise Conflict(
                f"cannot reserve {display(quantity)} of {self.item} at {self.location}:"
                f" {display(max(self.available, Decimal(0)))} available"
                f" ({display(self.on_hand)} on hand, {display(self.reserved)} reserved)"
            )
