"""The posting rule: book what the counters say minus what is already booked (pure).

Components are consumed for good and scrapped parts alike (a scrapped part used its material);
finished goods are received for good parts only. A negative difference books reversals, so the
ledger corrects itself if the series ever says less than was booked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

RECEIPT = "receipt"
BACKFLUSH = "backflush"
REVERSAL = "reversal"
OPENING = "opening"


@dataclass(frozen=True, slots=True)
class Counts:
    """Good and scrap quantities of a work order."""

    good: Decimal
    scrap: Decimal


@dataclass(frozen=True, slots=True)
class BomLine:
    """Quantity of a component per finished unit (single level)."""

    component: str
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class PostingPlaces:
    """Where a line draws components and puts finished goods, and the production location."""

    production: str
    components: str
    finished: str


@dataclass(frozen=True, slots=True)
class PlannedMove:
    """A stock move the posting wants booked (quantity > 0)."""

    item: str
    from_location: str
    to_location: str
    quantity: Decimal
    reason: str


@dataclass(frozen=True, slots=True)
class Posting:
    """What to book for one work order: the count deltas and the moves they cause."""

    work_order: str
    good_delta: Decimal
    scrap_delta: Decimal
    moves: tuple[PlannedMove, ...]

    @property
    def empty(self) -> bool:
        """True when there is nothing to book."""
        return not self.moves and not self.good_delta and not self.scrap_delta


def _move(item: str, source: str, target: str, quantity: Decimal, reason: str) -> PlannedMove:
    """A move of `quantity` (sign picks the direction: negative books the reverse move)."""
    if quantity > 0:
        return PlannedMove(item, source, target, quantity, reason)
    return PlannedMove(item, target, source, -quantity, REVERSAL)


def plan_posting(
    *,
    work_order: str,
    item: str,
    produced: Counts,
    booked: Counts,
    bom: Sequence[BomLine],
    places: PostingPlaces,
) -> Posting:
    """The moves that bring the booked quantities of `work_order` to `produced`."""
    good_delta = produced.good - booked.good
    scrap_delta = produced.scrap - booked.scrap
    moves: list[PlannedMove] = []
    consumed = good_delta + scrap_delta
    if consumed:
        for line in bom:
            quantity = consumed * line.quantity
            if quantity:
                moves.append(
                    _move(line.component, places.components, places.production, quantity, BACKFLUSH)
                )
    if good_delta:
        moves.append(_move(item, places.production, places.finished, good_delta, RECEIPT))
    return Posting(work_order, good_delta, scrap_delta, tuple(moves))
