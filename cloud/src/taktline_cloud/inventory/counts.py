"""Cycle counts and the adjustments they post, with approval (pure).

A user counts an item at a store (optionally one lot of it). The difference to the book quantity
becomes an adjustment: a move from the inventory location (more was found) or to it (less was
found), valued at the item's moving average. An adjustment worth more than the plant's threshold
(|difference| × unit cost > `inventory.adjustment_approval_value`) waits, pending, until another
user approves it (the counter may not approve their own count) or someone rejects it; one within
the threshold is posted at once.

An approved count posts the difference as it was AT THE COUNT, not counted minus the book at
approval: moves booked between the count and its approval (a backflush, a receipt) happened to
the shelf after it was counted, so they are already right in the books and stay; correcting
against the book at approval would undo them. A count that would take the books below zero
when it is posted (the shelf changed more than the books say) is refused: count again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from taktline_cloud.errors import Conflict, Forbidden, Invalid
from taktline_cloud.inventory.quantities import display

COUNT = "count"
"""Reason of an adjustment move posted by a count."""

_USER = re.compile(r"^\S(.{0,62}\S)?$")


class CountStatus(StrEnum):
    """Where a count is: waiting for approval, or done (posted, approved, rejected)."""

    PENDING = "pending"
    POSTED = "posted"
    """Within the threshold: posted when it was counted."""
    APPROVED = "approved"
    REJECTED = "rejected"


def check_user(user: str | None) -> str:
    """The user's name (1-64 characters, not blank at either end), or Invalid."""
    if user is None or not user.strip():
        raise Invalid(
            "who is counting or deciding? send the user's name in the X-Taktline-User header"
        )
    if not _USER.match(user):
        raise Invalid(f"user {user!r}: 1-64 characters, no spaces at either end")
    return user


def check_counted(counted: object) -> Decimal:
    """The counted quantity (a finite decimal >= 0), or Invalid."""
    if isinstance(counted, bool) or not isinstance(counted, Decimal | int):
        raise Invalid(f"counted quantity must be an exact decimal, got {type(counted).__name__}")
    amount = Decimal(counted)
    if not amount.is_finite() or amount < 0:
        raise Invalid(f"counted quantity must be >= 0, got {counted}")
    return amount


def reference(count_id: int) -> str:
    """The reference of the moves a count posts."""
    return f"COUNT-{count_id}"


@dataclass(frozen=True, slots=True)
class Count:
    """A count as stored."""

    id: int
    item: str
    location: str
    lot: str | None
    counted: Decimal
    book: Decimal
    unit_cost: Decimal
    threshold: Decimal
    status: CountStatus
    counted_by: str
    counted_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None

    @property
    def difference(self) -> Decimal:
        """counted - book: > 0 found more (into the store), < 0 found less (out of it)."""
        return self.counted - self.book

    @property
    def value(self) -> Decimal:
        """What the adjustment is worth: |difference| × unit cost."""
        return abs(self.difference) * self.unit_cost

    def what(self) -> str:
        """'count 7 of RM-GASKET at WH1/RAW (lot L1)' for messages."""
        lot = f" (lot {self.lot})" if self.lot else ""
        return f"count {self.id} of {self.item} at {self.location}{lot}"


def first_status(difference: Decimal, unit_cost: Decimal, threshold: Decimal) -> CountStatus:
    """A new count's status: pending when the adjustment's value is above the threshold."""
    if abs(difference) * unit_cost > threshold:
        return CountStatus.PENDING
    return CountStatus.POSTED


def check_decision(count: Count, user: str, *, approve: bool) -> None:
    """Conflict unless the count is pending; Forbidden when its counter would approve it."""
    if count.status is not CountStatus.PENDING:
        by = f" by {count.decided_by}" if count.decided_by else ""
        raise Conflict(
            f"{count.what()} is already {count.status}{by}: only a pending one is decided"
        )
    if approve and user == count.counted_by:
        raise Forbidden(
            f"{user} counted {count.what()} and may not approve it: an adjustment worth"
            f" {display(count.value)} (above {display(count.threshold)}) needs another user's"
            " approval"
        )


def check_postable(count: Count, on_hand: Decimal, lot_on_hand: Decimal | None) -> None:
    """Conflict when posting the count's difference would take the books below zero."""
    if count.difference >= 0:
        return
    taken = -count.difference
    held = on_hand if lot_on_hand is None else min(on_hand, lot_on_hand)
    if taken > held:
        where = f"lot {count.lot} at {count.location}" if count.lot else count.location
        raise Conflict(
            f"{count.what()} cannot be posted: it takes {display(taken)} but the books hold"
            f" {display(held)} of {count.item} in {where} now; count again"
        )
