"""Work order states (ISA-95 job order states) and the one table that says which moves are legal."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final

from taktline_cloud.errors import Conflict


class WorkOrderStatus(StrEnum):
    """The state of a work order."""

    CREATED = "created"
    RELEASED = "released"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    HELD = "held"
    COMPLETED = "completed"
    ABORTED = "aborted"
    CLOSED = "closed"


_S = WorkOrderStatus

TRANSITIONS: Final[dict[WorkOrderStatus, frozenset[WorkOrderStatus]]] = {
    _S.CREATED: frozenset({_S.RELEASED, _S.ABORTED}),
    # Dispatch (sending the order to the line's PLC) is optional until a PLC takes orders.
    _S.RELEASED: frozenset({_S.DISPATCHED, _S.RUNNING, _S.HELD, _S.ABORTED}),
    _S.DISPATCHED: frozenset({_S.RUNNING, _S.HELD, _S.ABORTED}),
    _S.RUNNING: frozenset({_S.HELD, _S.COMPLETED, _S.ABORTED}),
    _S.HELD: frozenset({_S.RUNNING, _S.ABORTED}),
    _S.COMPLETED: frozenset({_S.CLOSED}),
    _S.ABORTED: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
}
"""Allowed transitions: the only place that decides whether a status change is legal."""

OWNS_LINE_OUTPUT: Final = frozenset({_S.RUNNING})
"""States in which a work order owns its line's counts (one per line at a time)."""


def transition(number: str, current: WorkOrderStatus, target: WorkOrderStatus) -> WorkOrderStatus:
    """Return `target` if `current` → `target` is allowed; raise Conflict otherwise."""
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none"
        raise Conflict(
            f"work order {number} is {current}: cannot become {target} (allowed: {allowed})"
        )
    return target


@dataclass(frozen=True, slots=True)
class WorkOrder:
    """A work order: make `quantity` of `item` on `line`; good/scrap are what has been booked."""

    number: str
    item: str
    line: str
    quantity: Decimal
    status: WorkOrderStatus
    created_at: datetime
    released_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    good: Decimal = Decimal(0)
    scrap: Decimal = Decimal(0)

    def moved_to(self, target: WorkOrderStatus, at: datetime) -> WorkOrder:
        """This order in status `target` (Conflict when the table forbids it), stamped `at`."""
        status = transition(self.number, self.status, target)
        if status is WorkOrderStatus.RELEASED:
            return replace(self, status=status, released_at=at)
        if status is WorkOrderStatus.RUNNING and self.started_at is None:
            # Resuming a held order keeps its first start. (Windows that leave out the time on
            # hold come with the hold command; nothing holds an order yet.)
            return replace(self, status=status, started_at=at)
        if status is WorkOrderStatus.COMPLETED:
            return replace(self, status=status, completed_at=at)
        return replace(self, status=status)

    def booked(self, good: Decimal, scrap: Decimal) -> WorkOrder:
        """This order with new booked quantities."""
        return replace(self, good=good, scrap=scrap)

    @property
    def remaining(self) -> Decimal:
        """Good parts still to make (never negative)."""
        return max(self.quantity - self.good, Decimal(0))
