"""MRP records against hand-computed textbook tables.

Every table below was worked out by hand, bucket by bucket, with the rules of
`taktline_cloud.planning.mrp`'s docstring: PAB[b] = PAB[b-1] + scheduled[b] + planned[b] -
gross[b] starting from on hand, an order whenever PAB would fall below safety stock, released
lead-time buckets earlier. Buckets are weeks from START; bucket 0 is past due.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from taktline_cloud.planning.bom import BomCycleError, BomLine, PlanningError, low_level_codes
from taktline_cloud.planning.buckets import Buckets
from taktline_cloud.planning.items import ItemPlanning, LotSize, Source
from taktline_cloud.planning.mrp import (
    SAFETY_STOCK,
    Demand,
    DemandKind,
    ExceptionKind,
    ExceptionMessage,
    MrpRecord,
    Peg,
    PlannedOrder,
    PlanningData,
    ReceiptKind,
    ScheduledReceipt,
    net_change,
    regenerate,
    trace,
)

START = date(2026, 11, 30)
BUCKETS = Buckets(START, 7, 6)


def week(n: int) -> date:
    """A day inside bucket n (n = 0: before the start, past due)."""
    return START + timedelta(days=7 * (n - 1) + 2)


def row(*values: str | int) -> tuple[Decimal, ...]:
    return tuple(Decimal(str(value)) for value in values)


def demands(item: str, by_week: Mapping[int, int | str], prefix: str = "SO") -> list[Demand]:
    return [
        Demand(f"{prefix}-{n}", item, week(n), Decimal(str(quantity)))
        for n, quantity in by_week.items()
    ]


def one_item(
    planning: ItemPlanning,
    gross: Mapping[int, int | str],
    on_hand: int | str = 0,
    receipts: list[ScheduledReceipt] | None = None,
) -> MrpRecord:
    data = PlanningData(
        BUCKETS,
        [planning],
        demands=demands(planning.item, gross),
        receipts=receipts or [],
        on_hand={planning.item: Decimal(str(on_hand))},
    )
    return regenerate(data).records[planning.item]


def test_buckets_put_dates_before_the_start_in_past_due_and_drop_past_the_horizon() -> None:
    assert BUCKETS.index(START - timedelta(days=30)) == 0
    assert BUCKETS.index(START) == 1
    assert BUCKETS.index(START + timedelta(days=6)) == 1
    assert BUCKETS.index(START + timedelta(days=7)) == 2
    assert BUCKETS.index(START + timedelta(days=41)) == 6
    assert BUCKETS.index(START + timedelta(days=42)) is None
    # An aware datetime counts by its UTC date: 23:30 UTC on the day before is past due.
    assert BUCKETS.index(datetime(2026, 11, 29, 23, 30, tzinfo=UTC)) == 0
    with pytest.raises(ValueError, match="naive"):
        BUCKETS.index(datetime(2026, 12, 1, 12, 0))  # noqa: DTZ001 - the point of the test
    assert BUCKETS.lead_buckets(3) == 1
    assert BUCKETS.lead_buckets(15) == 3


def test_lot_for_lot_offsets_releases_by_the_lead_time_and_flags_past_due() -> None:
    record = one_item(ItemPlanning("A", lead_time=2), {1: 10, 2: 15, 3: 20, 5: 30}, on_hand=20)
    #                            past  w1  w2  w3  w4  w5  w6
    assert record.gross == row(0, 10, 15, 20, 0, 30, 0)
    assert record.scheduled == row(0, 0, 0, 0, 0, 0, 0)
    assert record.projected == row(20, 10, 0, 0, 0, 0, 0)
    assert record.net == row(0, 0, 5, 20, 0, 30, 0)
    assert record.planned_receipts == row(0, 0, 5, 20, 0, 30, 0)
    assert record.planned_releases == row(5, 20, 0, 30, 0, 0, 0)
    assert record.planned_orders == (
        PlannedOrder("PLN/A/2", "A", Decimal(5), 2, 0, Source.BUY),
        PlannedOrder("PLN/A/3", "A", Decimal(20), 3, 1, Source.BUY),
        PlannedOrder("PLN/A/5", "A", Decimal(30), 5, 3, Source.BUY),
    )
    # Week 2's order should have been released in week 0: before the plan's start.
    assert record.exceptions == (
        ExceptionMessage(ExceptionKind.PAST_DUE, "A", "PLN/A/2", 2, None, Decimal(5)),
    )


GROSS = {1: 30, 3: 45, 4: 10, 5: 70, 6: 5}


@pytest.mark.parametrize(
    ("lot_size", "planned", "projected"),
    [
        #                                   past w1  w2  w3  w4  w5  w6
        (LotSize.lot_for_lot(), (0, 30, 0, 45, 10, 70, 5), (0, 0, 0, 0, 0, 0, 0)),
        # Whole lots of 50: week 5 is 55 short, so two lots.
        (LotSize.fixed(Decimal(50)), (0, 50, 0, 50, 0, 100, 0), (0, 20, 20, 25, 15, 45, 40)),
        # At least 60, in multiples of 25: 60 -> 75 every time.
        (
            LotSize.min_multiple(Decimal(60), Decimal(25)),
            (0, 75, 0, 0, 75, 75, 0),
            (0, 45, 45, 0, 65, 70, 65),
        ),
        # Three weeks of supply: week 1 covers 1-3 (30 + 0 + 45), week 4 covers 4-6 (10 + 70 + 5).
        (LotSize.periods_of_supply(3), (0, 75, 0, 0, 85, 0, 0), (0, 45, 45, 0, 75, 5, 0)),
    ],
    ids=["lot-for-lot", "fixed", "min-multiple", "periods-of-supply"],
)
def test_each_lot_size_rule(
    lot_size: LotSize, planned: tuple[int, ...], projected: tuple[int, ...]
) -> None:
    record = one_item(ItemPlanning("L", lot_size=lot_size), GROSS)
    assert record.gross == row(0, 30, 0, 45, 10, 70, 5)
    assert record.planned_receipts == row(*planned)
    assert record.planned_releases == row(*planned)  # lead time 0
    assert record.projected == row(*projected)


def test_min_multiple_net_requirements_are_before_rounding() -> None:
    record = one_item(
        ItemPlanning("L", lot_size=LotSize.min_multiple(Decimal(60), Decimal(25))), GROSS
    )
    assert record.net == row(0, 30, 0, 0, 10, 5, 0)


def test_safety_stock_is_kept_and_pegged_last() -> None:
    record = one_item(
        ItemPlanning("X", lead_time=1, safety_stock=Decimal(15)), {1: 20, 2: 10, 3: 30}, 40
    )
    assert record.gross == row(0, 20, 10, 30, 0, 0, 0)
    assert record.projected == row(40, 20, 15, 15, 15, 15, 15)
    assert record.net == row(0, 0, 5, 30, 0, 0, 0)
    assert record.planned_receipts == row(0, 0, 5, 30, 0, 0, 0)
    assert record.planned_releases == row(0, 5, 30, 0, 0, 0, 0)
    assert record.exceptions == ()
    # On hand serves the earliest orders; the safety stock is what the last order leaves.
    assert record.pegs == (
        Peg("on-hand", "SO-1", Decimal(20)),
        Peg("on-hand", "SO-2", Decimal(10)),
        Peg("on-hand", "SO-3", Decimal(10)),
        Peg("PLN/X/2", "SO-3", Decimal(5)),
        Peg("PLN/X/3", "SO-3", Decimal(15)),
        Peg("PLN/X/3", SAFETY_STOCK, Decimal(15)),
    )


def test_scheduled_receipts_are_expedited_deferred_or_cancelled() -> None:
    receipts = [
        ScheduledReceipt("PO-A", "P", week(1), Decimal(30)),
        ScheduledReceipt("PO-B", "P", week(3), Decimal(40)),
        ScheduledReceipt("PO-D", "P", week(5), Decimal(10)),
        ScheduledReceipt("PO-C", "P", week(6), Decimal(50)),
    ]
    record = one_item(ItemPlanning("P", lead_time=1), {2: 25, 4: 60}, 10, receipts)
    # Week 2 is 15 short: PO-A (due week 1) is first needed then. Week 4 is 45 short: PO-B
    # (week 3) is not needed before, and PO-D (week 5) is pulled in for the last 5. PO-C never.
    assert record.gross == row(0, 0, 25, 0, 60, 0, 0)
    assert record.scheduled == row(0, 0, 30, 0, 50, 0, 0)
    assert record.projected == row(10, 10, 15, 15, 5, 5, 5)
    assert record.planned_orders == ()
    assert record.exceptions == (
        ExceptionMessage(ExceptionKind.DEFER, "P", "PO-A", 1, 2, Decimal(30)),
        ExceptionMessage(ExceptionKind.DEFER, "P", "PO-B", 3, 4, Decimal(40)),
        ExceptionMessage(ExceptionKind.EXPEDITE, "P", "PO-D", 5, 4, Decimal(10)),
        ExceptionMessage(ExceptionKind.CANCEL, "P", "PO-C", 6, None, Decimal(50)),
    )
    assert record.pegs == (
        Peg("on-hand", "SO-2", Decimal(10)),
        Peg("PO-A", "SO-2", Decimal(15)),
        Peg("PO-A", "SO-4", Decimal(15)),
        Peg("PO-B", "SO-4", Decimal(40)),
        Peg("PO-D", "SO-4", Decimal(5)),
    )


def test_receipts_are_used_before_a_new_order_and_the_rest_is_planned() -> None:
    receipts = [ScheduledReceipt("PO-1", "P", week(2), Decimal(20))]
    record = one_item(
        ItemPlanning("P", lead_time=1, lot_size=LotSize.fixed(Decimal(25))), {2: 50, 3: 10}, 5
    )
    # Without the receipt: week 2 is 45 short -> two lots (PAB 5); week 3 is 5 short -> a lot.
    assert record.planned_receipts == row(0, 0, 50, 25, 0, 0, 0)
    record = one_item(
        ItemPlanning("P", lead_time=1, lot_size=LotSize.fixed(Decimal(25))),
        {2: 50, 3: 10},
        5,
        receipts,
    )
    # 5 + 20 - 50 = -25: one lot of 25 in week 2; week 3: 0 - 10 -> another lot, PAB 15.
    assert record.scheduled == row(0, 0, 20, 0, 0, 0, 0)
    assert record.planned_receipts == row(0, 0, 25, 25, 0, 0, 0)
    assert record.planned_releases == row(0, 25, 25, 0, 0, 0, 0)
    assert record.projected == row(5, 5, 0, 15, 15, 15, 15)
    assert record.exceptions == ()


def test_an_overdue_receipt_and_a_past_due_demand_land_in_the_past_due_bucket() -> None:
    receipts = [ScheduledReceipt("PO-9", "P", START - timedelta(days=3), Decimal(10))]
    record = one_item(ItemPlanning("P"), {0: 4, 1: 3}, 0, receipts)
    assert record.gross == row(4, 3, 0, 0, 0, 0, 0)
    assert record.scheduled == row(10, 0, 0, 0, 0, 0, 0)
    assert record.projected == row(6, 3, 3, 3, 3, 3, 3)
    assert record.exceptions == (
        ExceptionMessage(ExceptionKind.PAST_DUE, "P", "PO-9", 0, None, Decimal(10)),
    )


def plant(on_hand_b: str = "5", on_hand_c: str = "40") -> PlanningData:
    """A textbook three-level plant: A = 2 B + 1 C, B = 3 C with 10 % scrap of C."""
    return PlanningData(
        BUCKETS,
        [
            ItemPlanning("A", lead_time=1, source=Source.MAKE),
            ItemPlanning("B", lead_time=1, source=Source.MAKE),
            ItemPlanning("C", lead_time=1),
        ],
        bom=[
            BomLine("A", "B", Decimal(2)),
            BomLine("A", "C", Decimal(1)),
            BomLine("B", "C", Decimal(3), scrap=Decimal("0.1")),
        ],
        demands=[
            Demand("SO-1", "A", week(3), Decimal(10)),
            Demand("SO-2", "A", week(5), Decimal(20)),
        ],
        on_hand={"B": Decimal(on_hand_b), "C": Decimal(on_hand_c)},
    )


def test_multi_level_explosion_with_scrap_and_low_level_codes() -> None:
    plan = regenerate(plant())
    a, b, c = plan.records["A"], plan.records["B"], plan.records["C"]
    assert (a.low_level_code, b.low_level_code, c.low_level_code) == (0, 1, 2)
    #                                  past w1  w2  w3  w4  w5  w6
    assert a.gross == row(0, 0, 0, 10, 0, 20, 0)
    assert a.planned_releases == row(0, 0, 10, 0, 20, 0, 0)
    # B: 2 per A, needed at A's release; 5 on hand.
    assert b.gross == row(0, 0, 20, 0, 40, 0, 0)
    assert b.projected == row(5, 5, 0, 0, 0, 0, 0)
    assert b.planned_receipts == row(0, 0, 15, 0, 40, 0, 0)
    assert b.planned_releases == row(0, 15, 0, 40, 0, 0, 0)
    assert b.planned_orders[0].source is Source.MAKE
    # C: 1 per A at A's release + 3 x 1.1 = 3.3 per B at B's release; 40 on hand.
    assert c.gross == row(0, "49.5", 10, 132, 20, 0, 0)
    assert c.projected == row(40, 0, 0, 0, 0, 0, 0)
    assert c.net == row(0, "9.5", 10, 132, 20, 0, 0)
    assert c.planned_releases == row("9.5", 10, 132, 20, 0, 0, 0)
    assert [m.kind for m in c.exceptions] == [ExceptionKind.PAST_DUE]
    # A dependent requirement is named after the parent's planned order that causes it.
    assert [(r.id, r.bucket, r.quantity, r.parent) for r in c.requirements] == [
        ("PLN/B/2", 1, Decimal("49.5"), "B"),
        ("PLN/A/3", 2, Decimal(10), "A"),
        ("PLN/B/4", 3, Decimal(132), "B"),
        ("PLN/A/5", 4, Decimal(20), "A"),
    ]


def test_pegging_traces_dependent_demand_to_the_sales_order_line() -> None:
    plan = regenerate(plant())
    # C's 132 for B's week-4 order: that order serves A's week-5 order, which serves SO-2.
    assert trace(plan, "C", "PLN/B/4") == (("A", "SO-2"),)
    # B's week-2 order (15) and B's on hand (5) both serve A's week-3 order, i.e. SO-1.
    assert plan.records["B"].pegs[:2] == (
        Peg("on-hand", "PLN/A/3", Decimal(5)),
        Peg("PLN/B/2", "PLN/A/3", Decimal(15)),
    )
    assert trace(plan, "C", "PLN/B/2") == (("A", "SO-1"),)
    assert trace(plan, "C", "PLN/A/5") == (("A", "SO-2"),)
    assert trace(plan, "A", "SO-1") == (("A", "SO-1"),)


def test_open_work_order_components_are_demand_and_running_orders_are_receipts() -> None:
    data = plant()
    # WO-7 still needs 12 C in week 1; WO-8 for B will finish (projected) in week 2 with 20.
    component = Demand("WO-7/C", "C", week(1), Decimal(12), DemandKind.WORK_ORDER)
    running = ScheduledReceipt("WO-8", "B", week(2), Decimal(20), ReceiptKind.WORK_ORDER)
    data.set_demands("C", [component])
    data.set_receipts("B", [running])
    plan = regenerate(data)
    assert plan.records["B"].planned_receipts == row(0, 0, 0, 0, 35, 0, 0)
    assert plan.records["B"].projected == row(5, 5, 5, 5, 0, 0, 0)
    assert plan.records["C"].gross == row(0, 12, 10, "115.5", 20, 0, 0)


def test_a_bom_cycle_is_refused_with_the_cycle_named() -> None:
    items = [ItemPlanning(name) for name in "ABCD"]
    bom = [
        BomLine("A", "B", Decimal(1)),
        BomLine("B", "C", Decimal(1)),
        BomLine("C", "D", Decimal(1)),
        BomLine("D", "B", Decimal(1)),
    ]
    with pytest.raises(BomCycleError, match=r"BOM cycle: [BCD] -> [BCD] -> [BCD] -> [BCD]") as e:
        PlanningData(BUCKETS, items, bom=bom)
    cycle = e.value.cycle
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["B", "C", "D"]
    for parent, component in itertools.pairwise(cycle):
        assert BomLine(parent, component, Decimal(1)) in bom
    with pytest.raises(BomCycleError):
        BomLine("A", "A", Decimal(1))


def test_low_level_code_is_the_deepest_use() -> None:
    one = Decimal(1)
    children = {"A": (("B", one), ("D", one)), "B": (("D", one),), "E": (("A", one),)}
    assert low_level_codes("ABDE", children) == {"E": 0, "A": 1, "B": 2, "D": 3}


def test_bad_planning_data_is_refused() -> None:
    with pytest.raises(PlanningError, match="unknown item 'Z'"):
        PlanningData(BUCKETS, [ItemPlanning("A")], bom=[BomLine("A", "Z", Decimal(1))])
    with pytest.raises(PlanningError, match="unknown item 'Z'"):
        PlanningData(BUCKETS, [ItemPlanning("A")], demands=demands("Z", {1: 1}))
    with pytest.raises(PlanningError, match="lead time"):
        ItemPlanning("A", lead_time=-1)
    with pytest.raises(PlanningError, match="fixed lot size"):
        LotSize.fixed(Decimal(0))


def test_demand_past_the_horizon_is_left_out_and_reported() -> None:
    late = Demand("SO-late", "A", START + timedelta(days=60), Decimal(5))
    data = PlanningData(BUCKETS, [ItemPlanning("A")], demands=[late])
    assert data.beyond_horizon == {"SO-late"}
    assert regenerate(data).records["A"].planned_orders == ()


def test_net_change_after_a_count_replans_the_item_and_what_is_below_it() -> None:
    data = plant()
    before = regenerate(data)
    data.set_on_hand("B", Decimal(25))  # a posted count: B now covers A's week-3 order
    after = net_change(before, data, ["B"])
    assert after.replanned == ("B", "C")
    assert after.records["A"] is before.records["A"]  # untouched: the same record
    assert after.records["B"].planned_receipts == row(0, 0, 0, 0, 35, 0, 0)
    assert after.records["C"].gross == row(0, 0, 10, "115.5", 20, 0, 0)
    assert after.records == regenerate(data).records


def test_net_change_stops_where_dependent_demand_does_not_change() -> None:
    data = plant()
    before = regenerate(data)
    data.set_on_hand("C", Decimal(100))  # a count of the bottom item changes nothing above
    after = net_change(before, data, ["C"])
    assert after.replanned == ("C",)
    assert after.records["A"] is before.records["A"]
    assert after.records["B"] is before.records["B"]
    assert after.records == regenerate(data).records
    # B bought instead of made: B's orders change source, their quantities and dates do not.
    data.set_item(ItemPlanning("B", lead_time=1, source=Source.BUY))
    again = net_change(after, data, ["B"])
    assert again.replanned == ("B",)
    assert again.records["B"].planned_orders[0].source is Source.BUY
    assert again.records["C"] is after.records["C"]
    assert again.records == regenerate(data).records


def test_net_change_after_a_po_confirmation_expedites_it_and_replans_below() -> None:
    data = plant()
    before = regenerate(data)
    # A PO for 7 B confirmed for week 6: B is short in week 2, so the PO is pulled in.
    data.set_receipts("B", [ScheduledReceipt("PO-3", "B", week(6), Decimal(7))])
    after = net_change(before, data, ["B"])
    assert after.replanned == ("B", "C")
    assert after.records["B"].exceptions == (
        ExceptionMessage(ExceptionKind.EXPEDITE, "B", "PO-3", 6, 2, Decimal(7)),
    )
    assert after.records["B"].planned_receipts == row(0, 0, 8, 0, 40, 0, 0)
    assert after.records == regenerate(data).records


def test_net_change_after_a_changed_sales_order_replans_every_level() -> None:
    data = plant()
    before = regenerate(data)
    data.set_demands("A", [*demands("A", {3: 10}), Demand("SO-2", "A", week(4), Decimal(25))])
    progress: list[tuple[int, int]] = []
    after = net_change(
        before, data, ["A"], progress=lambda done, total: progress.append((done, total))
    )
    assert after.replanned == ("A", "B", "C")
    assert progress[-1] == (3, 3)
    assert after.records == regenerate(data).records
    assert trace(after, "C", "PLN/B/3") == (("A", "SO-2"),)


def test_new_orders_can_replace_an_items_orders_and_keep_its_forecast() -> None:
    data = plant()
    forecast = Demand("FC/A/5", "A", week(5), Decimal(7), DemandKind.FORECAST)
    data.set_demands("A", [*demands("A", {3: 10}), forecast])
    data.set_demands("A", demands("A", {4: 25}, prefix="SO-new"), keep={DemandKind.FORECAST})
    assert sorted((r.id, r.kind) for r in data.demands["A"]) == [
        ("FC/A/5", DemandKind.FORECAST),
        ("SO-new-4", DemandKind.SALES),
    ]
    data.set_demands("A", [])  # nothing kept unless asked
    assert "A" not in data.demands


def test_net_change_refuses_a_changed_bom() -> None:
    before = regenerate(plant())
    other = PlanningData(BUCKETS, [ItemPlanning("A"), ItemPlanning("B"), ItemPlanning("C")])
    with pytest.raises(PlanningError, match="BOM changed"):
        net_change(before, other, ["A"])


def test_progress_reports_items_done_up_to_the_total() -> None:
    items = [ItemPlanning(f"I{n:03d}") for n in range(250)]
    calls: list[tuple[int, int]] = []
    regenerate(PlanningData(BUCKETS, items), progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (2, 250)
    assert calls[-1] == (250, 250)
    assert [d for d, _ in calls] == sorted({d for d, _ in calls})
