"""Item planning data: lead time, safety stock, lot-size rule, make or buy."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from taktline_cloud.planning.bom import PlanningError

ZERO = Decimal(0)


class Source(enum.StrEnum):
    """How a planned order is filled: a work order (make) or a purchase order (buy)."""

    MAKE = "make"
    BUY = "buy"


class LotRule(enum.StrEnum):
    """The lot-size rules of issue 5."""

    LOT_FOR_LOT = "lot-for-lot"
    FIXED = "fixed"
    MIN_MULTIPLE = "min-multiple"
    PERIODS_OF_SUPPLY = "periods-of-supply"


@dataclass(frozen=True, slots=True)
class LotSize:
    """A lot-size rule with its parameters; build one with the class methods."""

    rule: LotRule = LotRule.LOT_FOR_LOT
    quantity: Decimal = ZERO
    minimum: Decimal = ZERO
    multiple: Decimal = ZERO
    periods: int = 1

    @classmethod
    def lot_for_lot(cls) -> LotSize:
        """Order exactly the net requirement of each bucket."""
        return cls()

    @classmethod
    def fixed(cls, quantity: Decimal) -> LotSize:
        """Order in lots of `quantity`: enough whole lots in one order to cover the bucket."""
        if quantity <= 0:
            raise PlanningError("a fixed lot size must be > 0")
        return cls(LotRule.FIXED, quantity=quantity)

    @classmethod
    def min_multiple(cls, minimum: Decimal, multiple: Decimal) -> LotSize:
        """At least `minimum`, then rounded up to a multiple of `multiple` (0 = any quantity)."""
        if minimum < 0 or multiple < 0:
            raise PlanningError("lot minimum and multiple must be >= 0")
        return cls(LotRule.MIN_MULTIPLE, minimum=minimum, multiple=multiple)

    @classmethod
    def periods_of_supply(cls, periods: int) -> LotSize:
        """One order covers the net requirements of `periods` buckets from the first short one."""
        if periods < 1:
            raise PlanningError("periods of supply must be >= 1")
        return cls(LotRule.PERIODS_OF_SUPPLY, periods=periods)

    def round(self, net: Decimal) -> Decimal:
        """The order quantity for a net requirement (periods of supply is sized by the engine)."""
        if self.rule is LotRule.FIXED:
            lots = (net / self.quantity).to_integral_value(ROUND_CEILING)
            return lots * self.quantity
        if self.rule is LotRule.MIN_MULTIPLE:
            quantity = max(net, self.minimum)
            if self.multiple > 0:
                quantity = (quantity / self.multiple).to_integral_value(
                    ROUND_CEILING
                ) * self.multiple
            return quantity
        return net


@dataclass(frozen=True, slots=True)
class ItemPlanning:
    """What MRP needs to know about an item; the lead time is in buckets of the plan."""

    item: str
    lead_time: int = 0
    safety_stock: Decimal = ZERO
    lot_size: LotSize = LotSize()
    source: Source = Source.BUY

    def __post_init__(self) -> None:
        if self.lead_time < 0:
            raise PlanningError(f"{self.item}: lead time must be >= 0")
        if self.safety_stock < 0:
            raise PlanningError(f"{self.item}: safety stock must be >= 0")
