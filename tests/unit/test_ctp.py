"""Capable-to-promise: hand-computed promises over a small plant, and invariants (hypothesis).

The plant: line L1 works two shifts Monday to Friday, 06:00-14:00 and 14:00-22:00 UTC (no
night shift, no weekend); item A is made on L1 at 60/h measured (120/h standard) from one
component X per A.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taktline_cloud.errors import Invalid
from taktline_cloud.planning.bom import BomLine
from taktline_cloud.sales.ctp import (
    ComponentSupply,
    CtpKind,
    CtpPromise,
    FinishedStock,
    OrderLine,
    Plant,
    Promiser,
    PurchaseOrder,
    QueuedWork,
    Route,
    StepKind,
    WorkingCalendar,
    promise_order,
)

TUESDAY = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
DUE = date(2026, 12, 4)
TWO_SHIFTS = WorkingCalendar.weekly(
    {day: [(time(6), time(14)), (time(14), time(22))] for day in range(5)}
)


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def plant(
    *,
    stock: str = "0",
    promised: str = "0",
    rate: str | None = "60",
    queue: tuple[QueuedWork, ...] = (),
    x_on_hand: str = "1000",
    x_lead_time: timedelta | None = None,
    pos: tuple[PurchaseOrder, ...] = (),
    extra_routes: tuple[Route, ...] = (),
    calendars: dict[str, WorkingCalendar] | None = None,
) -> Plant:
    per_hour = None if rate is None else Decimal(rate)
    return Plant(
        calendars=calendars or {"L1": TWO_SHIFTS},
        routes=(Route("A", "L1", per_hour, Decimal(120)), *extra_routes),
        queue=queue,
        stock=(FinishedStock("A", Decimal(stock), Decimal(promised)),),
        bom=(BomLine("A", "X", Decimal(1)),),
        components=(ComponentSupply("X", Decimal(x_on_hand), x_lead_time),),
        purchase_orders=pos,
    )


def line(quantity: str, number: int = 1, item: str = "A") -> OrderLine:
    return OrderLine(number, item, Decimal(quantity), DUE)


def one(quantity: str, setup: Plant, now: datetime = TUESDAY) -> CtpPromise:
    (result,) = promise_order("SO-12", [line(quantity)], setup, now)
    return result


def test_stock_covers_the_line_now() -> None:
    # 150 on hand, 30 already promised: 120 available to promise covers 100.
    promise = one("100", plant(stock="150", promised="30"))
    assert promise.promised_at == TUESDAY
    assert promise.kind is CtpKind.STOCK
    assert promise.reason == "SO-12 line 1: 100 from stock"
    assert [(s.kind, s.reference, s.quantity) for s in promise.steps] == [
        (StepKind.STOCK, "A", Decimal(100))
    ]
    assert not promise.at_risk


def test_production_crosses_the_night_and_the_weekend() -> None:
    # Friday 20:00, 280 ordered, 40 in stock: 240 at 60/h = 4 h of line time. Friday 20:00-22:00
    # gives 2 h; no night shift, no weekend; Monday 06:00 + 2 h = 08:00.
    promise = one("280", plant(stock="40"), now=at(27, 20))
    assert promise.promised_at == at(30, 8)
    assert promise.kind is CtpKind.PRODUCTION
    # 4 h of work over 60 h of clock time: the 56 h off shift are told, and kept as a step.
    assert promise.reason == (
        "SO-12 line 1: 40 from stock; 240 made on L1 at 60/h measured, 27 Nov 20:00 to 30 Nov 08:00"
        " (shift calendar: 56 h off shift during the run)"
    )
    assert [s.kind for s in promise.steps] == [
        StepKind.STOCK,
        StepKind.CALENDAR,
        StepKind.PRODUCTION,
    ]
    made = promise.steps[-1]
    assert (made.kind, made.reference, made.at, made.quantity) == (
        StepKind.PRODUCTION,
        "L1",
        at(30, 8),
        Decimal(240),
    )


def test_production_starts_at_the_next_shift_and_rounds_up_to_the_minute() -> None:
    # Saturday: the line opens Monday 06:00; 10 at 60/h = 10 min; 7 at 60/h = 7 min → 06:07;
    # 7.5 at 60/h = 7.5 min → 06:07:30 → promised 06:08.
    assert one("10", plant(), now=at(28, 9)).promised_at == at(30, 6, 10)
    assert one("7.5", plant(), now=at(28, 9)).promised_at == at(30, 6, 8)


def test_a_holiday_drops_its_shifts() -> None:
    monday_off = WorkingCalendar.weekly(
        {day: [(time(6), time(22))] for day in range(5)}, holidays=[date(2026, 11, 30)]
    )
    promise = one("10", plant(calendars={"L1": monday_off}), now=at(28, 9))
    assert promise.promised_at == at(1, 6, 10, month=12)


def test_a_night_shift_runs_past_midnight() -> None:
    nights = WorkingCalendar.weekly({day: [(time(22), time(6))] for day in range(7)})
    # Tuesday 10:00: the night shift opens 22:00; 600 at 60/h = 10 h → 8 h to Wednesday 06:00,
    # then 2 h from Wednesday 22:00 → Thursday 00:00.
    promise = one("600", plant(calendars={"L1": nights}))
    assert promise.promised_at == at(26, 0)


def test_a_weekend_and_a_holiday_delay_the_start_and_the_reason_says_so() -> None:
    # Two shifts Monday to Friday, Monday 30 Nov a holiday. Friday 27 Nov 21:30: 120 at 60/h =
    # 2 h; Friday gives 30 min to 22:00, the weekend and the holiday nothing, Tuesday 1 Dec
    # 06:00 + 1 h 30 min = 07:30.
    holiday = WorkingCalendar.weekly(
        {day: [(time(6), time(14)), (time(14), time(22))] for day in range(5)},
        holidays=[date(2026, 11, 30)],
    )
    promise = one("120", plant(calendars={"L1": holiday}), now=at(27, 21, 30))
    assert promise.promised_at == at(1, 7, 30, month=12)
    # 2 h of work over 82 h of clock time.
    assert promise.reason.endswith(
        "27 Nov 21:30 to 1 Dec 07:30 (shift calendar: 80 h off shift during the run)"
    )
    # Saturday: the line is closed until Tuesday 06:00 (weekend, then the holiday).
    promise = one("60", plant(calendars={"L1": holiday}), now=at(28, 9))
    assert promise.promised_at == at(1, 7, month=12)
    assert "(shift calendar: closed until 1 Dec 06:00)" in promise.reason
    (closed,) = [s for s in promise.steps if s.kind is StepKind.CALENDAR]
    assert (closed.reference, closed.at) == ("L1", at(1, 6, month=12))


def test_no_calendar_step_when_the_line_works_through() -> None:
    promise = one("60", plant())  # Tuesday 10:00-11:00, inside the day shift
    assert not any(s.kind is StepKind.CALENDAR for s in promise.steps)
    assert "shift calendar" not in promise.reason


def test_a_night_shift_over_midnight_in_the_plants_time_zone() -> None:
    # Shanghai (UTC+8): a night shift 22:00-06:00 local = 14:00-22:00 UTC, Monday to Friday
    # evenings; Thursday 26 Nov (local) a holiday: its night shift is dropped, but Wednesday's,
    # running past midnight into the holiday, still runs to its end.
    shanghai = ZoneInfo("Asia/Shanghai")
    nights = WorkingCalendar.weekly(
        {day: [(time(22), time(6))] for day in range(5)},
        holidays=[date(2026, 11, 26)],
        zone=shanghai,
    )
    # Tuesday 10:00 UTC = 18:00 local: the shift opens 22:00 local = 14:00 UTC. 900 at 60/h =
    # 15 h: Tuesday night 14:00-22:00 UTC (8 h), Wednesday night 8 h more → 7 h into it,
    # Wednesday 14:00 + 7 h = 21:00 UTC (Thursday 05:00 local, the holiday).
    promise = one("900", plant(calendars={"L1": nights}))
    assert promise.promised_at == at(25, 21)
    assert "closed until 24 Nov 14:00" in promise.reason  # sentences are in UTC
    # 1 000 = 16 h 40 min: Thursday's night (the holiday) is dropped → Friday 27 Nov 22:00
    # local = 14:00 UTC + 40 min.
    assert one("1000", plant(calendars={"L1": nights})).promised_at == at(27, 14, 40)
    # The windows come out in UTC.
    begin, end = next(nights.windows(TUESDAY))
    assert (begin, end) == (at(24, 14), at(24, 22))
    assert begin.tzinfo is UTC


def test_a_shift_across_a_daylight_saving_change_lasts_its_real_time() -> None:
    # Berlin leaves summer time on Sunday 25 Oct 2026 at 03:00 (back to 02:00): the Saturday
    # night shift 22:00-06:00 lasts 9 h of real time (20:00 UTC to 05:00 UTC).
    berlin = WorkingCalendar.weekly({5: [(time(22), time(6))]}, zone=ZoneInfo("Europe/Berlin"))
    saturday = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    begin, end = next(berlin.windows(saturday))
    assert (begin, end) == (
        datetime(2026, 10, 24, 20, 0, tzinfo=UTC),
        datetime(2026, 10, 25, 5, 0, tzinfo=UTC),
    )
    assert berlin.advance(saturday, timedelta(hours=9)) == end


def test_two_orders_compete_for_one_purchase_order() -> None:
    # 20 X on hand and PO-7 of 100 X on Thursday 08:00, then PO-9 of 100 X on Monday 30 Nov
    # 08:00. SO-1 (60 A) takes the 20 on hand and 40 of PO-7 → made Thursday 08:00-09:00.
    # SO-2 (80 A) finds 60 left on PO-7 and takes 20 of PO-9 → Monday 08:00, 80 at 60/h →
    # 09:20. Each order alone would be made from PO-7 on Thursday.
    pos = (
        PurchaseOrder("PO-7", "X", Decimal(100), at(26, 8)),
        PurchaseOrder("PO-9", "X", Decimal(100), at(30, 8)),
    )
    setup = plant(x_on_hand="20", pos=pos)
    promiser = Promiser(setup, TUESDAY)
    (first,) = promiser.promise("SO-1", [line("60")])
    (second,) = promiser.promise("SO-2", [line("80")])
    assert first.promised_at == at(26, 9)
    assert "component X short by 40 until PO-7 confirmed 26 Nov 08:00" in first.reason
    assert second.promised_at == at(30, 9, 20)
    assert "component X short by 80 until PO-9 confirmed 30 Nov 08:00" in second.reason
    (component,) = [s for s in second.steps if s.kind is StepKind.COMPONENT]
    assert (component.reference, component.at) == ("PO-9", at(30, 8))
    # Alone, SO-2 would take the 20 on hand and 60 of PO-7: Thursday 08:00 + 80 min.
    (alone,) = promise_order("SO-2", [line("80")], setup, TUESDAY)
    assert alone.promised_at == at(26, 9, 20)


def test_a_refused_order_takes_nothing_from_the_next() -> None:
    pos = (PurchaseOrder("PO-7", "X", Decimal(100), at(26, 8)),)
    promiser = Promiser(plant(x_on_hand="0", pos=pos), TUESDAY)
    with pytest.raises(Invalid, match="unknown item 'Z'"):
        promiser.promise("SO-1", [line("60"), line("5", 2, item="Z")])
    (promise,) = promiser.promise("SO-2", [line("100")])
    assert promise.promised_at == at(26, 9, 40)  # all of PO-7 still there


def test_queued_work_goes_first() -> None:
    # WO-1002 has 236 left on L1 at 118/h measured = 2 h → done 12:00; then 59 at 118/h = 30 min.
    queued = (QueuedWork("WO-1002", "L1", "A", Decimal(236)),)
    promise = one("59", plant(rate="118", queue=queued))
    assert promise.promised_at == at(24, 12, 30)
    assert promise.reason == (
        "SO-12 line 1: 59 made on L1 after WO-1002 (done 24 Nov 12:00) at 118/h measured,"
        " 24 Nov 12:00 to 24 Nov 12:30"
    )
    queue = [s for s in promise.steps if s.kind is StepKind.QUEUE]
    assert [(s.reference, s.at) for s in queue] == [("WO-1002", at(24, 12))]


def test_a_stopped_line_falls_back_to_its_standard_rate() -> None:
    # Measured 0/h (stopped): standard 120/h → 60 in 30 min.
    promise = one("60", plant(rate="0"))
    assert promise.promised_at == at(24, 10, 30)
    assert "at 120/h standard" in promise.reason


def test_component_short_until_a_confirmed_purchase_order() -> None:
    # 40 of A need 40 X; 10 on hand, so short by 30 until PO-7 (confirmed Thursday 08:00, the
    # first one by date); then 40 at 60/h = 40 min → 08:40.
    pos = (
        PurchaseOrder("PO-9", "X", Decimal(500), at(27, 8)),
        PurchaseOrder("PO-7", "X", Decimal(100), at(26, 8)),
    )
    promise = one("40", plant(x_on_hand="10", pos=pos))
    assert promise.promised_at == at(26, 8, 40)
    assert promise.kind is CtpKind.PRODUCTION
    assert "component X short by 30 until PO-7 confirmed 26 Nov 08:00" in promise.reason
    component = next(s for s in promise.steps if s.kind is StepKind.COMPONENT)
    assert (component.reference, component.at, component.quantity) == (
        "PO-7",
        at(26, 8),
        Decimal(30),
    )


def test_component_with_no_supply_is_bought_in_its_lead_time() -> None:
    # 40 X needed, 10 on hand, no PO: bought in 5 days → Sunday 29 Nov 10:00; the line opens
    # Monday 06:00; 40 at 60/h → 06:40, after the requested date 28 Nov.
    setup = plant(x_on_hand="10", x_lead_time=timedelta(days=5))
    (promise,) = promise_order(
        "SO-12", [OrderLine(1, "A", Decimal(40), date(2026, 11, 28))], setup, TUESDAY
    )
    assert promise.kind is CtpKind.PURCHASE
    assert promise.promised_at == at(30, 6, 40)
    assert promise.at_risk
    assert "component X short by 30: 30 to buy, 5 days lead time → 29 Nov 10:00" in promise.reason
    bought = next(s for s in promise.steps if s.kind is StepKind.PURCHASE)
    assert (bought.reference, bought.at) == ("X", at(29, 10))


def test_a_need_beyond_a_late_purchase_order_waits_for_it_and_the_new_purchase() -> None:
    # 140 X needed: 10 on hand, 100 from PO-7 (confirmed late: Friday 4 Dec 08:00), 30 to buy
    # in 2 days (Thursday 26 Nov 10:00). The new purchase would come first, but the 100 of
    # PO-7 only come Friday 4 Dec: the line starts then; 140 at 60/h → 10:20.
    pos = (PurchaseOrder("PO-7", "X", Decimal(100), at(4, 8, month=12)),)
    setup = plant(x_on_hand="10", x_lead_time=timedelta(days=2), pos=pos)
    promise = one("140", setup)
    assert promise.kind is CtpKind.PURCHASE
    assert promise.promised_at == at(4, 10, 20, month=12)
    assert "component X: 100 from PO-7 confirmed 4 Dec 08:00" in promise.reason
    assert "30 to buy, 2 days lead time → 26 Nov 10:00" in promise.reason
    found = {s.kind: (s.reference, s.at, s.quantity) for s in promise.steps}
    assert found[StepKind.COMPONENT] == ("PO-7", at(4, 8, month=12), Decimal(100))
    assert found[StepKind.PURCHASE] == ("X", at(26, 10), Decimal(30))
    # A later PO confirmation can only move the promise later, never earlier.
    sooner = plant(
        x_on_hand="10",
        x_lead_time=timedelta(days=2),
        pos=(PurchaseOrder("PO-7", "X", Decimal(100), at(1, 8, month=12)),),
    )
    assert one("140", sooner).promised_at == at(1, 10, 20, month=12)


def test_component_with_no_supply_and_no_lead_time_cannot_be_promised() -> None:
    promise = one("40", plant(x_on_hand="10"))
    assert promise.promised_at is None
    assert promise.kind is CtpKind.SHORT
    assert promise.at_risk
    assert promise.reason == "SO-12 line 1: component X short by 30: no open supply, no lead time"


def test_an_item_no_line_makes_is_short_beyond_stock() -> None:
    setup = Plant(calendars={"L1": TWO_SHIFTS}, stock=(FinishedStock("B", Decimal(5)),))
    (promise,) = promise_order("SO-12", [line("8", item="B")], setup, TUESDAY)
    assert promise.kind is CtpKind.SHORT
    assert (
        promise.reason == "SO-12 line 1: 5 from stock; 3 short: no stock left and no line makes B"
    )


def test_a_later_line_sees_what_earlier_lines_took() -> None:
    # Line 1: 80 = 50 from stock + 30 made 10:00-10:30, taking 30 of the 70 X on hand.
    # Line 2: 60, no stock left; 60 X needed, 40 left → short by 20 until PO-7 at 13:00 (the
    # line is free from 10:30); 60 at 60/h → 14:00.
    pos = (PurchaseOrder("PO-7", "X", Decimal(100), at(24, 13)),)
    setup = plant(stock="50", x_on_hand="70", pos=pos)
    first, second = promise_order("SO-12", [line("60", 2), line("80", 1)], setup, TUESDAY)
    assert (first.line, first.promised_at) == (1, at(24, 10, 30))
    assert first.reason == (
        "SO-12 line 1: 50 from stock; 30 made on L1 at 60/h measured, 24 Nov 10:00 to 24 Nov 10:30"
    )
    assert (second.line, second.promised_at) == (2, at(24, 14))
    assert second.reason == (
        "SO-12 line 2: component X short by 20 until PO-7 confirmed 24 Nov 13:00;"
        " 60 made on L1 after SO-12 line 1 (done 24 Nov 10:30) at 60/h measured,"
        " 24 Nov 13:00 to 24 Nov 14:00"
    )
    # Alone, line 2 would take the 50 in stock and make 10 by 10:10, components on hand.
    assert one("60", setup).promised_at == at(24, 10, 10)


def test_a_semi_finished_component_is_taken_from_stock_then_made_first() -> None:
    # A needs 1 S; S is made on L2 at 30/h from 2 X. 40 A: 10 S from stock, 30 S made on L2
    # 10:00-11:00 (taking 60 X); then 40 A on L1 at 60/h 11:00-11:40.
    def two_level(s_line: str) -> Plant:
        return Plant(
            calendars={"L1": TWO_SHIFTS, "L2": TWO_SHIFTS},
            routes=(Route("A", "L1", Decimal(60)), Route("S", s_line, Decimal(30))),
            stock=(FinishedStock("S", Decimal(10)),),
            bom=(BomLine("A", "S", Decimal(1)), BomLine("S", "X", Decimal(2))),
            components=(ComponentSupply("X", Decimal(70)),),
        )

    promise = one("40", two_level("L2"))
    assert promise.promised_at == at(24, 11, 40)
    assert promise.reason == (
        "SO-12 line 1: S: 10 from stock; S: 30 made on L2 at 30/h measured,"
        " 24 Nov 10:00 to 24 Nov 11:00; 40 made on L1 at 60/h measured,"
        " 24 Nov 11:00 to 24 Nov 11:40"
    )
    # On the same line, A waits for S's run; the 10 X left are 2 short for
    # a second line of 6 (12 X).
    first, second = promise_order("SO-12", [line("40"), line("6", 2)], two_level("L1"), TUESDAY)
    assert first.promised_at == at(24, 11, 40)
    assert "40 made on L1 after S for SO-12 line 1 (done 24 Nov 11:00)" in first.reason
    assert second.kind is CtpKind.SHORT
    assert second.reason == (
        "SO-12 line 2: S: component X short by 2: no open supply, no lead time"
    )


def test_a_line_that_cannot_be_promised_takes_nothing() -> None:
    # Line 1 (80) would take the 50 in stock but its 30 to make lack X; line 2 gets the stock.
    setup = plant(stock="50", x_on_hand="0")
    first, second = promise_order("SO-12", [line("80"), line("50", 2)], setup, TUESDAY)
    assert (first.kind, first.promised_at) == (CtpKind.SHORT, None)
    assert (second.kind, second.promised_at) == (CtpKind.STOCK, TUESDAY)


def test_the_line_finishing_first_is_chosen() -> None:
    # L2 is faster (90/h) but busy until 12:00; L1 at 60/h finishes 90 at 11:30; 180 units:
    # L1 13:00, L2 12:00 + 2 h = 14:00 → L1.
    setup = plant(
        extra_routes=(Route("A", "L2", Decimal(90)),),
        queue=(QueuedWork("WO-5", "L2", "A", Decimal(180)),),
        calendars={"L1": TWO_SHIFTS, "L2": TWO_SHIFTS},
    )
    assert one("90", setup).promised_at == at(24, 11, 30)
    faster = plant(
        extra_routes=(Route("A", "L2", Decimal(600)),),
        calendars={"L1": TWO_SHIFTS, "L2": TWO_SHIFTS},
    )
    promise = one("90", faster)
    assert promise.promised_at == at(24, 10, 9)
    assert "made on L2 at 600/h" in promise.reason


def test_steps_are_machine_readable() -> None:
    promise = one("100", plant(stock="40"))
    assert [s.to_json() for s in promise.steps] == [
        {
            "kind": "stock",
            "reference": "A",
            "at": "2026-11-24T10:00:00+00:00",
            "quantity": "40",
            "text": "40 from stock",
        },
        {
            "kind": "production",
            "reference": "L1",
            "at": "2026-11-24T11:00:00+00:00",
            "quantity": "60",
            "text": "60 made on L1 at 60/h measured, 24 Nov 10:00 to 24 Nov 11:00",
        },
    ]


def test_bad_input_is_refused() -> None:
    with pytest.raises(Invalid, match="aware"):
        one("1", plant(), now=datetime(2026, 11, 24, 10, 0))  # noqa: DTZ001 - the bad input
    naive_po = (PurchaseOrder("PO-1", "X", Decimal(1), datetime(2026, 11, 25)),)  # noqa: DTZ001
    with pytest.raises(Invalid, match="PO-1"):
        one("1", plant(pos=naive_po))
    with pytest.raises(Invalid, match="no standard rate"):
        Route("A", "L1", Decimal(0))
    with pytest.raises(Invalid, match="no standard rate"):
        Route("A", "L1", None, Decimal(-1))
    with pytest.raises(Invalid, match="unknown item 'Z'"):
        promise_order("SO-12", [line("1", item="Z")], plant(), TUESDAY)
    with pytest.raises(Invalid, match="quantity must be > 0"):
        one("0", plant())
    with pytest.raises(Invalid, match="unknown line 'L9'"):
        one("1", plant(extra_routes=(Route("A", "L9", Decimal(1)),)))
    cycle = Plant(
        calendars={"L1": TWO_SHIFTS},
        routes=(Route("A", "L1", Decimal(60)),),
        bom=(BomLine("A", "B", Decimal(1)), BomLine("B", "A", Decimal(1))),
    )
    with pytest.raises(Invalid, match="BOM cycle"):
        promise_order("SO-12", [line("1")], cycle, TUESDAY)
    with pytest.raises(Invalid, match="at least one shift"):
        WorkingCalendar.weekly({})
    with pytest.raises(Invalid, match="component 'Y' of A"):
        promise_order(
            "SO-12",
            [line("5")],
            Plant(
                calendars={"L1": TWO_SHIFTS},
                routes=(Route("A", "L1", Decimal(60)),),
                bom=(BomLine("A", "Y", Decimal(1)),),
            ),
            TUESDAY,
        )


# --- invariants ---------------------------------------------------------------------------------

orders = st.lists(st.integers(1, 400), min_size=1, max_size=4)
moments = st.integers(0, 7 * 24 * 60 - 1).map(lambda m: TUESDAY + timedelta(minutes=m))


def random_plant(stock: int, rate: int, queued: int, x_on_hand: int, po: int) -> Plant:
    return plant(
        stock=str(stock),
        rate=str(rate),
        queue=(QueuedWork("WO-1", "L1", "A", Decimal(queued)),),
        x_on_hand=str(x_on_hand),
        x_lead_time=timedelta(days=3),
        pos=(PurchaseOrder("PO-1", "X", Decimal(po), TUESDAY + timedelta(days=1)),),
    )


def dates(quantities: list[int], setup: Plant, now: datetime) -> list[datetime]:
    lines = [line(str(q), n) for n, q in enumerate(quantities, start=1)]
    promised = [p.promised_at for p in promise_order("SO-1", lines, setup, now)]
    assert all(p is not None for p in promised)  # every component can be bought
    return [p for p in promised if p is not None]


@settings(max_examples=150, deadline=None)
@given(
    quantities=orders,
    now=moments,
    stock=st.integers(0, 500),
    more_stock=st.integers(1, 500),
    rate=st.integers(1, 300),
    faster=st.integers(1, 300),
    queued=st.integers(0, 500),
    x_on_hand=st.integers(0, 500),
    po=st.integers(0, 500),
)
def test_promises_never_precede_now_and_more_stock_or_speed_never_delays(
    *,
    quantities: list[int],
    now: datetime,
    stock: int,
    more_stock: int,
    rate: int,
    faster: int,
    queued: int,
    x_on_hand: int,
    po: int,
) -> None:
    base = dates(quantities, random_plant(stock, rate, queued, x_on_hand, po), now)
    assert all(promised >= now for promised in base)
    richer = dates(quantities, random_plant(stock + more_stock, rate, queued, x_on_hand, po), now)
    assert all(r <= b for r, b in zip(richer, base, strict=True))
    quicker = dates(quantities, random_plant(stock, rate + faster, queued, x_on_hand, po), now)
    assert all(q <= b for q, b in zip(quicker, base, strict=True))


# --- the working calendar's fast paths equal the walk -------------------------------------------


def walked(calendar: WorkingCalendar, start: datetime, work: timedelta) -> datetime | None:
    """`advance` from first principles: every shift of every local day from the day before
    `start`, in start order, merged as the module docstring says (what the cached windows and
    the round-the-clock path must give); None when 3 years of days do not hold `work`."""
    if work <= timedelta(0):
        return start
    cursor = start.astimezone(UTC)
    day = cursor.astimezone(calendar.zone).date() - timedelta(days=1)
    left = work
    for _ in range(3 * 366):
        if day not in calendar.holidays:
            for shift in sorted(calendar.week[day.weekday()], key=lambda s: s.start):
                begin = datetime.combine(day, shift.start, calendar.zone).astimezone(UTC)
                ends = day + timedelta(days=1) if shift.end <= shift.start else day
                end = datetime.combine(ends, shift.end, calendar.zone).astimezone(UTC)
                if end > cursor and end > begin:
                    begin = max(begin, cursor)
                    if left <= end - begin:
                        return begin + left
                    left -= end - begin
                    cursor = end
        day += timedelta(days=1)
    return None


ZONES = [UTC, ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York")]
hours = st.integers(0, 23).map(time)
# Instants around the 2026 clock changes (Europe 29 Mar / 25 Oct, US 8 Mar / 1 Nov) and now.
DAYS = [datetime(2026, 3, day, tzinfo=UTC) for day in (7, 28)]
DAYS += [datetime(2026, 10, day, tzinfo=UTC) for day in (24, 31)]
starts = st.builds(
    lambda day, minutes: day + timedelta(minutes=minutes),
    st.sampled_from([*DAYS, TUESDAY]),
    st.integers(0, 3 * 24 * 60),
)
works = st.integers(0, 14 * 24 * 60).map(lambda m: timedelta(minutes=m))


@settings(max_examples=200, deadline=None)
@given(
    shifts=st.dictionaries(
        st.integers(0, 6), st.lists(st.tuples(hours, hours), min_size=1, max_size=3), min_size=1
    ),
    holidays=st.lists(st.integers(0, 40), max_size=4),
    zone=st.sampled_from(ZONES),
    start=starts,
    work=st.lists(works, min_size=1, max_size=4),
)
def test_the_kept_shift_windows_walk_as_the_shifts_say(
    *,
    shifts: dict[int, list[tuple[time, time]]],
    holidays: list[int],
    zone: ZoneInfo,
    start: datetime,
    work: list[timedelta],
) -> None:
    days = [start.date() + timedelta(days=d - 2) for d in holidays]
    calendar = WorkingCalendar.weekly(shifts, days, zone)
    for each in work:  # one calendar, several walks: the kept windows are reused
        expected = walked(calendar, start, each)
        if expected is None:
            with pytest.raises(Invalid, match="no working time within"):
                calendar.advance(start, each)
        else:
            assert calendar.advance(start, each) == expected
        first = walked(calendar, start, timedelta(microseconds=1))
        assert first is not None  # every calendar has a shift a week
        assert calendar.opens(start) == first - timedelta(microseconds=1)


@settings(max_examples=200, deadline=None)
@given(
    shift_at=hours,
    offset=st.integers(-12, 14),
    start=starts,
    work=works | st.integers(0, 10**6).map(lambda s: timedelta(seconds=s, microseconds=7)),
)
def test_round_the_clock_in_constant_time_equals_the_walk(
    *, shift_at: time, offset: int, start: datetime, work: timedelta
) -> None:
    # From a time of day to the same time the next day, every day, at a fixed UTC offset: the
    # fast path; the same shifts in the same offset as a named zone walk the windows.
    week = {day: [(shift_at, shift_at)] for day in range(7)}
    fast = WorkingCalendar.weekly(week, zone=timezone(timedelta(hours=offset)))
    walks = WorkingCalendar.weekly(week, zone=ZoneInfo(f"Etc/GMT{-offset:+d}"))
    assert fast._continuous  # the fast path is taken (private: what this test is about)
    assert not walks._continuous
    assert fast.advance(start, work) == walks.advance(start, work) == walked(walks, start, work)
    assert fast.opens(start) == walks.opens(start) == start
    assert fast.advance(start, work).tzinfo is UTC


def test_a_calendar_with_a_holiday_or_two_shift_times_is_not_round_the_clock() -> None:
    always = WorkingCalendar.always()
    assert always._continuous
    assert always.advance(TUESDAY, timedelta(days=1000)) == TUESDAY + timedelta(days=1000)
    with pytest.raises(Invalid, match="no working time within"):  # as the walk: the horizon
        always.advance(TUESDAY, timedelta(days=3 * 366))
    week = {day: [(time(0), time(0))] for day in range(7)}
    assert not WorkingCalendar.weekly(week, holidays=[date(2026, 12, 25)])._continuous
    assert not WorkingCalendar.weekly({**week, 6: [(time(6), time(6))]})._continuous
    assert not WorkingCalendar.weekly({**week, 6: [(time(0), time(12))]})._continuous
    assert not WorkingCalendar.weekly({**week, 6: []})._continuous
