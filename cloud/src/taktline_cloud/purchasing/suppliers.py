"""Suppliers, what they sell at which price and pack, and the rule that picks one for a need.

The sourcing rule (`choose_supplier`), so a buyer can redo it by hand:

1. Candidates are the supplier items of the item. Each quotes a delivery date of
   `today + lead time` (the supplier item's own lead time, else the supplier's) and an order
   quantity: the need rounded up to the supplier's minimum, then to a whole number of packs.
2. The preferred supplier item, when it meets the needed date.
3. Else the cheapest candidate that meets the date: the lowest cost of its rounded quantity
   (so a big pack can lose to a dearer unit price), converted to one currency when prices
   differ in currency; ties go to the earlier delivery, then the supplier code.
4. Else (nobody meets the date) the earliest delivery, ties to the cheapest: the requisition
   is late from the start and the sourcing says so (`meets_date` is False).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import ROUND_CEILING, Decimal
from enum import StrEnum

from taktline_cloud.errors import Invalid

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Supplier:
    """A supplier: its default lead time in days, its currency and its over-receipt tolerance.

    `over_receipt_tolerance` is a fraction (0.05 = a line may receive up to 5 % more than the
    agreed quantity); it is copied onto each purchase order drafted for the supplier.
    """

    code: str
    name: str
    lead_days: int
    currency: str = "EUR"
    over_receipt_tolerance: Decimal = ZERO

    def __post_init__(self) -> None:
        if not self.code:
            raise Invalid("a supplier needs a code")
        if self.lead_days < 0:
            raise Invalid(f"supplier {self.code}: lead time must be >= 0 days")
        if self.over_receipt_tolerance < 0:
            raise Invalid(f"supplier {self.code}: over-receipt tolerance must be >= 0")


@dataclass(frozen=True, slots=True)
class SupplierItem:
    """An item a supplier sells: unit price, minimum order quantity, pack size, own lead time.

    `pack_size` 0 means any quantity; `lead_days` None means the supplier's lead time.
    """

    supplier: str
    item: str
    unit_price: Decimal
    minimum: Decimal = ZERO
    pack_size: Decimal = ZERO
    lead_days: int | None = None
    preferred: bool = False

    def __post_init__(self) -> None:
        where = f"{self.supplier}/{self.item}"
        if self.unit_price < 0:
            raise Invalid(f"{where}: unit price must be >= 0")
        if self.minimum < 0 or self.pack_size < 0:
            raise Invalid(f"{where}: minimum and pack size must be >= 0")
        if self.lead_days is not None and self.lead_days < 0:
            raise Invalid(f"{where}: lead time must be >= 0 days")

    def order_quantity(self, need: Decimal) -> Decimal:
        """The need rounded up to the minimum, then up to a whole number of packs."""
        if need <= 0:
            raise Invalid(f"{self.supplier}/{self.item}: order quantity must be > 0")
        quantity = max(need, self.minimum)
        if self.pack_size > 0:
            packs = (quantity / self.pack_size).to_integral_value(ROUND_CEILING)
            quantity = packs * self.pack_size
        return quantity


class SourcingReason(StrEnum):
    """Why the rule picked a supplier (step 2, 3 or 4 of the module's rule)."""

    PREFERRED = "preferred"
    CHEAPEST = "cheapest meeting the date"
    EARLIEST = "earliest (none meets the date)"


@dataclass(frozen=True, slots=True)
class Sourcing:
    """The chosen supplier for a need: what to order, at what price, and when it can arrive."""

    supplier: str
    quantity: Decimal
    unit_price: Decimal
    currency: str
    lead_days: int
    delivery: date
    order_by: date  # the last day to order for the needed date
    meets_date: bool
    reason: SourcingReason

    @property
    def amount(self) -> Decimal:
        """The cost of the order quantity in the supplier's currency."""
        return self.quantity * self.unit_price


def choose_supplier(
    item: str,
    need: Decimal,
    needed: date,
    *,
    today: date,
    suppliers: Mapping[str, Supplier],
    supplier_items: Iterable[SupplierItem],
    rates: Mapping[str, Decimal] | None = None,
) -> Sourcing | None:
    """The supplier for `need` of `item` by `needed` (the module's rule); None if none sells it.

    `rates` converts each currency to one comparison currency (units of it per unit); it is
    needed only when the candidates' currencies differ.
    """
    candidates: list[Sourcing] = []
    preferred: list[Sourcing] = []
    for offer in supplier_items:
        if offer.item != item:
            continue
        supplier = suppliers.get(offer.supplier)
        if supplier is None:
            raise Invalid(f"{offer.supplier}/{item}: unknown supplier {offer.supplier!r}")
        lead = supplier.lead_days if offer.lead_days is None else offer.lead_days
        delivery = today + timedelta(days=lead)
        sourcing = Sourcing(
            supplier=supplier.code,
            quantity=offer.order_quantity(need),
            unit_price=offer.unit_price,
            currency=supplier.currency,
            lead_days=lead,
            delivery=delivery,
            order_by=needed - timedelta(days=lead),
            meets_date=delivery <= needed,
            reason=SourcingReason.CHEAPEST,
        )
        candidates.append(sourcing)
        if offer.preferred:
            preferred.append(sourcing)
    if not candidates:
        return None
    for sourcing in preferred:
        if sourcing.meets_date:
            return _because(sourcing, SourcingReason.PREFERRED)
    cost = _comparable_cost(candidates, rates)
    on_time = [s for s in candidates if s.meets_date]
    if on_time:
        best = min(on_time, key=lambda s: (cost(s), s.delivery, s.supplier))
        return _because(best, SourcingReason.CHEAPEST)
    best = min(candidates, key=lambda s: (s.delivery, cost(s), s.supplier))
    return _because(best, SourcingReason.EARLIEST)


def _because(sourcing: Sourcing, reason: SourcingReason) -> Sourcing:
    return replace(sourcing, reason=reason)


def _comparable_cost(candidates: list[Sourcing], rates: Mapping[str, Decimal] | None) -> _Cost:
    currencies = {s.currency for s in candidates}
    if len(currencies) == 1:
        return _Cost(None)
    missing = sorted(c for c in currencies if rates is None or c not in rates)
    if missing:
        raise Invalid(
            f"suppliers quote in {', '.join(sorted(currencies))}: "
            f"no exchange rate for {', '.join(missing)}"
        )
    return _Cost(rates)


@dataclass(frozen=True, slots=True)
class _Cost:
    """The order's cost in the comparison currency (the quoted one when all quotes share it)."""

    rates: Mapping[str, Decimal] | None

    def __call__(self, sourcing: Sourcing) -> Decimal:
        if self.rates is None:
            return sourcing.amount
        return sourcing.amount * self.rates[sourcing.currency]
