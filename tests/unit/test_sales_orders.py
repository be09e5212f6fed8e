"""The pure rules of sales orders entered through the API: the requested day, numbering, status."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from taktline_cloud.errors import Invalid
from taktline_cloud.sales.orders import line_status, next_order_number, order_status, requested_day


def test_a_requested_day_is_a_date_or_the_utc_day_of_an_instant() -> None:
    assert requested_day(date(2026, 12, 3), "line 1") == date(2026, 12, 3)
    shanghai = timezone(timedelta(hours=8))
    # 3 Dec 07:00 in Shanghai is 2 Dec 23:00 UTC.
    assert requested_day(datetime(2026, 12, 3, 7, tzinfo=shanghai), "line 1") == date(2026, 12, 2)
    assert requested_day(datetime(2026, 12, 3, 7, tzinfo=UTC), "line 1") == date(2026, 12, 3)


def test_an_instant_without_a_zone_is_refused_naming_the_line() -> None:
    naive = datetime(2026, 12, 3, 7)  # noqa: DTZ001 - the input refused
    with pytest.raises(Invalid, match=r"line 2 requested date: 2026-12-03T07:00:00 has no time"):
        requested_day(naive, "line 2 requested date")


def test_orders_are_numbered_above_the_highest_so_number() -> None:
    assert next_order_number([]) == "SO-1001"
    assert next_order_number(["SO-1001", "SO-2001", "X-9999", "SO-12a"]) == "SO-2002"


def test_an_order_is_open_while_a_line_is_and_cancelled_when_all_are() -> None:
    assert line_status(True, False) == "open"
    assert line_status(False, True) == "cancelled"
    assert line_status(False, False) == "closed"
    assert order_status(["cancelled", "open"]) == "open"
    assert order_status(["cancelled", "cancelled"]) == "cancelled"
    assert order_status(["cancelled", "closed"]) == "closed"
