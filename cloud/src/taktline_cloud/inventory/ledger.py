"""Stock moves and the balances they imply (pure)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from taktline_cloud.errors import Invalid
from taktline_cloud.inventory.lots import LOT_CODE
from taktline_cloud.production.posting import PlannedMove

BalanceKey = tuple[str, str]
"""(item, location)."""


@dataclass(frozen=True, slots=True)
class Move:
    """One ledger entry: `quantity` of `item` went from one location to another."""

    item: str
    from_location: str
    to_location: str
    quantity: Decimal
    reason: str
    reference: str
    at: datetime
    unit_cost: Decimal | None = None
    """Known cost of a receipt into the stores (it moves the average); None: the average."""
    lot: str | None = None
    """The lot moved (`inventory.lots`); None: stock kept without a lot."""

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise Invalid(f"stock move of {self.item}: quantity must be > 0, got {self.quantity}")
        if self.unit_cost is not None and (not self.unit_cost.is_finite() or self.unit_cost < 0):
            raise Invalid(
                f"stock move of {self.item}: unit cost must be >= 0, got {self.unit_cost}"
            )
        if self.lot is not None and not LOT_CODE.match(self.lot):
            raise Invalid(
                f"stock move of {self.item}: lot {self.lot!r}: 1-64 characters, no spaces"
            )
        if self.from_location == self.to_location:
            raise Invalid(f"stock move of {self.item}: from and to are both {self.to_location}")

    @classmethod
    def planned(
        cls,
        planned: PlannedMove,
        reference: str,
        at: datetime,
        unit_cost: Decimal | None = None,
    ) -> Move:
        """The ledger entry for a move the posting rule planned."""
        return cls(
            planned.item,
            planned.from_location,
            planned.to_location,
            planned.quantity,
            planned.reason,
            reference,
            at,
            unit_cost,
        )


def balance_changes(moves: Iterable[Move]) -> dict[BalanceKey, Decimal]:
    """Net change of on-hand per (item, location) caused by `moves`."""
    changes: defaultdict[BalanceKey, Decimal] = defaultdict(Decimal)
    for move in moves:
        changes[(move.item, move.from_location)] -= move.quantity
        changes[(move.item, move.to_location)] += move.quantity
    return dict(changes)
