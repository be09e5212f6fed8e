"""Lots: stock of an item kept apart by lot code, and which lots a move without one takes (pure).

A lot code names a batch of one item (the same code may name batches of two items). A move may
carry a lot: its quantity then leaves that lot at the source and arrives in it at the target,
and the lot balance of (item, location, lot) changes with it, in the same transaction as the
move. A move without a lot changes only the item's balance: at a location, the stock kept
without a lot is the on-hand less what its lots hold.

Where a location refuses negative stock, a move out of a lot may take at most what the lot holds
there. A posted PLC count (the backflush) names no lot: it is split FIFO (`allocate`): first the
stock kept without a lot, then the lots oldest first, and what is still missing is booked without
a lot, below zero (a count is never refused). A reservation's consumption, and a count that finds
less than the books without naming a lot, are split the same way. Other moves that name no lot
(a plain transfer through `Session.append_moves`) take the stock kept without a lot: where they
take more than that, it shows below zero beside the lots (`GET /api/stock/lots`) until a count
puts it right.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from taktline_cloud.errors import Conflict, Invalid
from taktline_cloud.inventory.quantities import display

if TYPE_CHECKING:
    from taktline_cloud.inventory.ledger import Move

LOT_CODE = re.compile(r"^\S{1,64}$")
"""A lot code: 1-64 characters without spaces."""

LotKey = tuple[str, str, str]
"""(item, location, lot)."""


def check_lot(lot: str) -> str:
    """The lot code, or Invalid naming what is wrong with it."""
    if not LOT_CODE.match(lot):
        raise Invalid(f"lot {lot!r}: 1-64 characters without spaces")
    return lot


def receipt_lot(order: str, line: int, sequence: int) -> str:
    """The lot a purchase order receipt goes into when the receiver names none: the order,
    the line and the receipt's number on the line (PO-7-1-2: PO-7 line 1, second receipt)."""
    return check_lot(f"{order}-{line}-{sequence}")


@dataclass(frozen=True, slots=True)
class LotBalance:
    """Stock of one lot of an item at one location."""

    item: str
    location: str
    lot: str
    on_hand: Decimal = Decimal(0)

    def check_outflow(self, quantity: Decimal) -> None:
        """Conflict when taking `quantity` out of the lot would take it below zero."""
        if quantity > self.on_hand:
            raise Conflict(
                f"not enough {self.item} in lot {self.lot} at {self.location}:"
                f" {display(self.on_hand)} in the lot, {display(quantity)} requested"
                " (the location does not allow negative stock)"
            )


def lot_changes(moves: Iterable[Move]) -> dict[LotKey, Decimal]:
    """Net change of each lot balance caused by the moves that carry a lot."""
    changes: defaultdict[LotKey, Decimal] = defaultdict(Decimal)
    for move in moves:
        if move.lot is None:
            continue
        changes[(move.item, move.from_location, move.lot)] -= move.quantity
        changes[(move.item, move.to_location, move.lot)] += move.quantity
    return dict(changes)


def allocate(
    quantity: Decimal, unlotted: Decimal, lots: Sequence[tuple[str, Decimal]]
) -> list[tuple[str | None, Decimal]]:
    """Split an outflow of `quantity` FIFO: (lot or None, quantity) parts, in order.

    `unlotted`: the stock kept without a lot; `lots`: (code, on hand) oldest first. The stock
    without a lot goes first (it is older than lots: opening stock, stock from before lots),
    then each lot up to what it holds; the rest is taken without a lot (it goes below zero).
    """
    if quantity <= 0:
        raise Invalid(f"an outflow to allocate must be > 0, got {quantity}")
    parts: list[tuple[str | None, Decimal]] = []
    left = quantity
    plain_part = min(left, max(unlotted, Decimal(0)))
    if plain_part > 0:
        parts.append((None, plain_part))
        left -= plain_part
    for code, on_hand in lots:
        if left <= 0:
            break
        take = min(left, on_hand)
        if take > 0:
            parts.append((code, take))
            left -= take
    if left > 0:
        if parts and parts[0][0] is None:
            parts[0] = (None, parts[0][1] + left)
        else:
            parts.insert(0, (None, left))
    return parts
