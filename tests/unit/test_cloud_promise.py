"""The delivery promise rule: stock first, then running work orders, in due order."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from taktline_cloud.sales.promise import (
    Demand,
    Promise,
    PromiseKind,
    Supply,
    ceil_minute,
    promise_changed,
    promise_lines,
    promise_moved,
)

NOW = datetime(2026, 11, 24, 14, 0, 10, tzinfo=UTC)
TODAY = NOW.date()
TOMORROW = TODAY + timedelta(days=1)


def demand(quantity: str, order: str = "SO-1", line: int = 1, due: date = TOMORROW) -> Demand:
    return Demand(order, line, Decimal(quantity), due)


def wo(number: str, quantity: str, good: str, rate: str | None, line: str = "LINE-1") -> Supply:
    per_hour = None if rate is None else Decimal(rate)
    return Supply(number, line, Decimal(quantity), Decimal(good), per_hour, "measured")


def one(demands: list[Demand], on_hand: str, supplies: list[Supply]) -> Promise:
    (result,) = promise_lines(demands, Decimal(on_hand), supplies, NOW)
    return result


def test_covered_by_stock_is_promised_now() -> None:
    promise = one([demand("100")], "120", [])
    assert promise.promised_at == NOW
    assert promise.kind is PromiseKind.STOCK
    assert promise.reason == "from stock: 120 on hand"
    assert not promise.at_risk


def test_covered_by_a_running_work_order_at_its_rate() -> None:
    # 600 needed, 120 on hand: 480 from WO-1001 at 2,100/h = 13.714 min → 14:13:52.9 → 14:14.
    promise = one([demand("600")], "120", [wo("WO-1001", "1000", "520", "2100")])
    assert promise.kind is PromiseKind.PRODUCTION
    assert promise.promised_at == datetime(2026, 11, 24, 14, 14, tzinfo=UTC)
    assert promise.reason == (
        "120 from stock + WO-1001 on LINE-1 at measured 2,100/h: 480 of 1,000 left"
        " → covered at 14:14"
    )


def test_promise_is_rounded_up_to_the_whole_minute() -> None:
    # Exactly 60 parts at 3,600/h = 60 s from 14:00:10 → 14:01:10 → rounded up to 14:02.
    promise = one([demand("60")], "0", [wo("WO-1", "100", "0", "3600")])
    assert promise.promised_at == datetime(2026, 11, 24, 14, 2, tzinfo=UTC)
    assert ceil_minute(datetime(2026, 11, 24, 14, 2, tzinfo=UTC)).minute == 2


def test_two_work_orders_add_up() -> None:
    # 300 needed: both lines at 600/h → 1,200/h together → 15 min; alone it would be 30 min.
    supplies = [wo("WO-1", "1000", "0", "600"), wo("WO-2", "1000", "0", "600", line="LINE-2")]
    promise = one([demand("300")], "0", supplies)
    assert promise.promised_at == datetime(2026, 11, 24, 14, 16, tzinfo=UTC)
    assert "WO-1 on LINE-1" in promise.reason
    assert "WO-2 on LINE-2" in promise.reason


def test_a_finished_work_order_stops_adding() -> None:
    # WO-1 has 50 left at 600/h (done after 5 min, 50 parts), WO-2 600/h: 250 needed.
    # After 5 min: 100 made; then 600/h for 150 more → 15 min more → 20 min.
    supplies = [wo("WO-1", "100", "50", "600"), wo("WO-2", "1000", "0", "600")]
    promise = one([demand("250")], "0", supplies)
    assert promise.promised_at == datetime(2026, 11, 24, 14, 21, tzinfo=UTC)


def test_orders_consume_in_due_order() -> None:
    later = demand("100", order="SO-1", due=TOMORROW + timedelta(days=3))
    sooner = demand("100", order="SO-2", due=TOMORROW)
    first_line = demand("50", order="SO-3", line=1, due=TOMORROW + timedelta(days=3))
    promises = promise_lines(
        [later, first_line, sooner], Decimal(120), [wo("WO-1", "500", "0", "60")], NOW
    )
    by_order = {p.order: p for p in promises}
    assert [p.order for p in promises] == ["SO-2", "SO-1", "SO-3"]
    assert by_order["SO-2"].kind is PromiseKind.STOCK  # due first: takes 100 of the 120
    # SO-1 needs 200 cumulative: 120 stock + 80 at 60/h = 80 min → 15:20:10 → 15:21.
    assert by_order["SO-1"].promised_at == datetime(2026, 11, 24, 15, 21, tzinfo=UTC)
    assert by_order["SO-1"].reason.startswith("20 from stock + WO-1")
    # SO-3 needs 250: 130 from the work order = 130 min → 16:10:10 → 16:11.
    assert by_order["SO-3"].promised_at == datetime(2026, 11, 24, 16, 11, tzinfo=UTC)
    assert not by_order["SO-3"].reason.startswith("0 from stock")


def test_not_covered_says_the_shortfall() -> None:
    promise = one([demand("600")], "120", [wo("WO-1", "300", "0", "2000")])
    assert promise.promised_at is None
    assert promise.kind is PromiseKind.SHORT
    assert promise.at_risk
    assert promise.reason.startswith("not covered: short by 180 (120 on hand + 300 to come")


def test_a_stopped_line_projects_nothing() -> None:
    promise = one([demand("600")], "120", [wo("WO-1", "1000", "10", "0")])
    assert promise.promised_at is None
    assert "no measured output on WO-1" in promise.reason
    assert one([demand("600")], "120", [wo("WO-1", "1000", "10", None)]).promised_at is None


def test_no_running_work_order_is_named() -> None:
    promise = one([demand("600")], "0", [])
    assert promise.reason == "not covered: short by 600 (0 on hand < 600); no running work order"


def test_at_risk_when_promised_after_the_requested_date() -> None:
    due_today = demand("100", due=TODAY)
    # 100 at 10/h = 10 h → tomorrow 00:00:10 → after the requested date.
    late = one([due_today], "0", [wo("WO-1", "1000", "0", "10")])
    assert late.promised_at is not None
    assert late.promised_at.date() == TOMORROW
    assert late.at_risk
    assert late.reason.endswith(f"covered at {TOMORROW.isoformat()} 00:01")
    on_time = one([demand("100")], "0", [wo("WO-1", "1000", "0", "10")])
    assert not on_time.at_risk


def test_negative_stock_counts_as_none() -> None:
    assert one([demand("1")], "-5", []).kind is PromiseKind.SHORT


def test_promise_changes_on_time_or_kind_but_a_stock_promise_stands() -> None:
    at = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    production = Promise("SO-1", 1, at, PromiseKind.PRODUCTION, "…", False)
    assert promise_changed(None, None, production)
    assert not promise_changed(at, "production", production)
    assert promise_changed(at + timedelta(minutes=1), "production", production)
    # a jitter of one minute either way leaves the promise given; a larger move re-times it
    one = timedelta(minutes=1)
    assert not promise_changed(at + one, "production", production, tolerance=one)
    assert not promise_changed(at - one, "production", production, tolerance=one)
    assert promise_changed(at + 2 * one, "production", production, tolerance=one)
    assert promise_changed(None, "production", production, tolerance=one)
    assert promise_changed(at, "stock", production)
    stock = Promise("SO-1", 1, NOW, PromiseKind.STOCK, "from stock", False)
    assert not promise_changed(NOW - timedelta(hours=1), "stock", stock)
    short = Promise("SO-1", 1, None, PromiseKind.SHORT, "not covered", True)
    assert not promise_changed(None, "short", short)


def test_a_promise_far_ahead_stands_until_it_moves_by_its_share_of_the_distance() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    five_days = now + timedelta(days=5)
    share = Fraction(1, 100)  # of 5 days: 72 minutes
    minute = timedelta(minutes=1)
    assert not promise_moved(five_days, five_days + timedelta(minutes=72), now, minute, share)
    assert promise_moved(five_days, five_days + timedelta(minutes=73), now, minute, share)
    assert not promise_moved(five_days, five_days - timedelta(minutes=72), now, minute, share)
    # No share, or no `now`: the absolute tolerance alone, as before.
    assert promise_moved(five_days, five_days + 2 * minute, now, minute)
    assert promise_moved(five_days, five_days + 2 * minute, None, minute, share)
    # Due within the hour: 1 % is 30 s, so the one-minute tolerance rules.
    soon = now + timedelta(minutes=50)
    assert promise_moved(soon, soon + 2 * minute, now, minute, share)
    assert not promise_moved(soon, soon + minute, now, minute, share)
    # Overdue (before now): no share of a negative distance.
    past = now - timedelta(days=1)
    assert promise_moved(past, past + 2 * minute, now, minute, share)
    production = Promise(
        "SO-1", 1, five_days + timedelta(hours=1), PromiseKind.PRODUCTION, "", True
    )
    assert not promise_changed(five_days, "production", production, minute, now=now, relative=share)
    assert promise_changed(five_days, "production", production, minute)
