"""Domain events the core returns to the adapters (websocket fan-out)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MACHINE_UPDATED = "machine.updated"
WORK_ORDER_UPDATED = "work_order.updated"
STOCK_UPDATED = "stock.updated"
PROMISE_CHANGED = "promise.changed"
SALES_ORDER_UPDATED = "sales_order.updated"
"""A sales order was created, or a line changed or cancelled: data is the whole order."""
POSTING = "posting"
NODE_UPDATED = "node.updated"
SNAPSHOT = "snapshot"
RESERVATION_CREATED = "reservation.created"
RESERVATION_RELEASED = "reservation.released"
RESERVATION_CONSUMED = "reservation.consumed"
MRP_PROGRESS = "mrp.progress"
"""A background MRP run's progress: {run, status, phase, done, total, percent} (throttled)."""
MRP_RUN_FINISHED = "mrp.run.finished"
"""An MRP run is stored (or failed): its summary with the counts of orders and messages."""


def iso_utc(at: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a "Z": 2026-11-24T19:40:00.123Z."""
    utc = at.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Event:
    """Something that changed; `data` is JSON-ready (Decimal as str, datetime as ISO "…Z")."""

    type: str
    data: Mapping[str, Any]
    at: datetime

    def to_json(self) -> dict[str, Any]:
        """The websocket message: {"type", "at", "data"}."""
        return {"type": self.type, "at": iso_utc(self.at), "data": dict(self.data)}
