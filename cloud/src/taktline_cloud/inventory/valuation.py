"""Moving-average valuation (pure): what a unit of an item is worth, and what a move carries.

One average per item across the plant's internal locations. A receipt at a known unit cost
(from a supplier, from production at its components' cost, an opening balance) moves the
average by quantity; every other move carries the average as it stands, so moves between
stores, issues and consumption never change it. When the stores hold nothing (or less than
nothing, after a shortage was booked), the receipt's cost becomes the average.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from taktline_cloud.errors import Invalid

AVERAGE_STEP = Decimal("0.000001")
"""Averages are kept to six decimal places (money per unit)."""


def average_after_receipt(
    on_hand: Decimal, average: Decimal, quantity: Decimal, unit_cost: Decimal
) -> Decimal:
    """The moving average after `quantity` arrives at `unit_cost` to `on_hand` at `average`."""
    if quantity <= 0:
        raise Invalid(f"a receipt's quantity must be > 0, got {quantity}")
    if unit_cost < 0:
        raise Invalid(f"a unit cost must be >= 0, got {unit_cost}")
    if on_hand <= 0:
        return unit_cost
    total = on_hand + quantity
    weighted = (on_hand * average + quantity * unit_cost) / total
    return weighted.quantize(AVERAGE_STEP, rounding=ROUND_HALF_EVEN)


def move_value(quantity: Decimal, unit_cost: Decimal) -> Decimal:
    """The value a move carries: its quantity at its unit cost (exact)."""
    return quantity * unit_cost
