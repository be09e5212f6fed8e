"""Sales orders entered through the API (pure rules): the new line, its requested day, the next
order number, and an order's status from its lines'.

A requested delivery is a UTC calendar day (promises and MRP buckets are days). It may be given
as that day ("2026-12-03") or as an instant with its zone ("2026-12-03T09:00:00+08:00" is the
UTC day 3 Dec 01:00 falls on); an instant without a zone is refused, it names no day for sure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Final, Literal

from taktline_cloud.errors import Invalid

FIRST_ORDER: Final = 1001
MAX_LINES: Final = 500
"""Lines of one order above which it is refused (a promise run re-times every open line)."""
_ORDER_NUMBER = re.compile(r"^SO-(\d+)$")

OrderStatus = Literal["open", "cancelled", "closed"]


@dataclass(frozen=True, slots=True)
class NewLine:
    """A line of a new sales order: `quantity` of `item` wanted on `requested`."""

    item: str
    quantity: Decimal
    requested: date | datetime


def requested_day(value: date | datetime, what: str) -> date:
    """The UTC day a requested delivery names; Invalid for an instant without a time zone."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise Invalid(
                f"{what}: {value.isoformat()} has no time zone (give a date, or add Z or an offset)"
            )
        return value.astimezone(UTC).date()
    if isinstance(value, date):
        return value
    raise Invalid(f"{what} must be a date, got {type(value).__name__}")


def next_order_number(existing: Iterable[str]) -> str:
    """SO-n one above the highest SO-n taken (SO-1001 first)."""
    numbers = [int(m.group(1)) for n in existing if (m := _ORDER_NUMBER.match(n))]
    return f"SO-{max(numbers, default=FIRST_ORDER - 1) + 1}"


def line_status(is_open: bool, cancelled: bool) -> OrderStatus:
    """open, cancelled, or closed (shipped or otherwise done)."""
    if cancelled:
        return "cancelled"
    return "open" if is_open else "closed"


def order_status(lines: Sequence[OrderStatus]) -> OrderStatus:
    """Open while a line is open; cancelled when every line is; closed otherwise."""
    if "open" in lines:
        return "open"
    if lines and all(status == "cancelled" for status in lines):
        return "cancelled"
    return "closed"
