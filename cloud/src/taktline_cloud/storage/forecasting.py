"""Forecasting's queries: an item's sales history as (requested date, quantity) (SQL only here).

Sales are dated by the line's *requested* date, not the order's creation: MRP plans an order at
its requested date, and the forecast it consumes must be cut on the same calendar, or an order
would consume the forecast of the bucket it was booked in instead of the one it is due in.
Every line counts, open or shipped (a shipped line was demand too), except a cancelled one.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from taktline_cloud.storage.session import Session
from taktline_cloud.storage.sql import to_date, to_decimal


def item_exists(session: Session, item: str) -> bool:
    """True when the item is in the master data."""
    return bool(session.executor.query("SELECT 1 FROM items WHERE sku = ?", (item,)))


def sales_by_requested_date(
    session: Session,
    item: str,
    *,
    since: date | None = None,
    before: date | None = None,
) -> list[tuple[date, Decimal]]:
    """(requested date, quantity) of the item's sales order lines in [since, before), by date."""
    statement = (
        "SELECT requested_date, quantity FROM sales_order_lines"
        " WHERE item = ? AND cancelled_at IS NULL"
    )
    params: list[object] = [item]
    if since is not None:
        statement += " AND requested_date >= ?"
        params.append(since)
    if before is not None:
        statement += " AND requested_date < ?"
        params.append(before)
    statement += " ORDER BY requested_date, order_number, line_no"
    return [(to_date(r[0]), to_decimal(r[1])) for r in session.executor.query(statement, params)]
