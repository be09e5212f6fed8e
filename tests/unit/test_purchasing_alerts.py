"""Supply alerts name the customer orders behind a purchase order line, through MRP pegging.

The plan, worked by hand (weekly buckets from Monday 30 Nov 2026, nothing on hand):

    pump (make, lead 1 week)      SO-1/1: 10 in week 5, SO-2/1: 5 in week 6
     └─ housing x1 (make, lead 1)
         └─ casting x2 (buy, lead 1, fixed lots of 50)

    pump:    PLN/pump/5 = 10 (release week 4) -> SO-1/1 10; PLN/pump/6 = 5 (week 5) -> SO-2/1 5
    housing: PLN/housing/4 = 10 (release 3) -> PLN/pump/5 10; PLN/housing/5 = 5 (release 4)
             -> PLN/pump/6 5
    casting: needs 20 in week 3 and 10 in week 4: PLN/casting/3 = 50 (one fixed lot) due
             week 3 (Mon 14 Dec) -> PLN/housing/4 20, PLN/housing/5 10, 20 unpegged

The casting requisition goes to BETA (minimum 60, 2.50 each: 150 beats ACME's 5 packs of 12
at 3.00 = 180), as PO-1 line 1 for 60, needed 14 Dec. Four castings short leave one housing
and so one pump short (factor 2, then 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

from taktline_cloud.planning.bom import BomLine
from taktline_cloud.planning.buckets import Buckets
from taktline_cloud.planning.items import ItemPlanning, LotSize, Source
from taktline_cloud.planning.mrp import Demand, DemandKind, MrpPlan, PlanningData, regenerate, trace
from taktline_cloud.purchasing.alerts import (
    AffectedDemand,
    AlertKind,
    affected_demands,
    confirmation_alerts,
    delivery_alerts,
)
from taktline_cloud.purchasing.confirmations import LineAnswer, confirm
from taktline_cloud.purchasing.orders import PurchaseOrder, draft_orders, scheduled_receipts
from taktline_cloud.purchasing.receipts import receive
from taktline_cloud.purchasing.requisitions import PeggedDemand, requisitions_from_plan
from taktline_cloud.purchasing.suppliers import Supplier, SupplierItem

START = date(2026, 11, 30)
BUCKETS = Buckets(START, 7, 6)
NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
NEEDED = date(2026, 12, 14)

SUPPLIERS = {
    "ACME": Supplier("ACME", "Acme Castings", lead_days=5),
    "BETA": Supplier("BETA", "Beta Foundry", lead_days=10),
}
OFFERS = [
    SupplierItem("ACME", "casting", Decimal("3.00"), pack_size=Decimal(12)),
    SupplierItem("BETA", "casting", Decimal("2.50"), minimum=Decimal(60)),
]


def planning_data() -> PlanningData:
    items = [
        ItemPlanning("pump", lead_time=1, source=Source.MAKE),
        ItemPlanning("housing", lead_time=1, source=Source.MAKE),
        ItemPlanning("casting", lead_time=1, lot_size=LotSize.fixed(Decimal(50))),
    ]
    bom = [
        BomLine("pump", "housing", Decimal(1)),
        BomLine("housing", "casting", Decimal(2)),
    ]
    demands = [
        Demand("SO-1/1", "pump", date(2026, 12, 30), Decimal(10)),  # week 5
        Demand("SO-2/1", "pump", date(2027, 1, 6), Decimal(5)),  # week 6
    ]
    return PlanningData(BUCKETS, items, bom=bom, demands=demands)


def the_plan() -> MrpPlan:
    return regenerate(planning_data())


def numbers() -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"PO-{n}"


def casting_order(plan: MrpPlan) -> PurchaseOrder:
    """PO-1 for the plan's casting requisition, sent to BETA."""
    requisitions = requisitions_from_plan(
        plan, today=START, suppliers=SUPPLIERS, supplier_items=OFFERS
    )
    (order,) = draft_orders(
        requisitions,
        SUPPLIERS,
        today=START,
        window_days=7,
        numbers=numbers(),
        created_at=NOW,
    )
    return order.sent(NOW)


BOTH_ORDERS = (
    AffectedDemand("pump", "SO-1/1", DemandKind.SALES, Decimal(10)),
    AffectedDemand("pump", "SO-2/1", DemandKind.SALES, Decimal(5)),
)


def test_the_plan_pegs_the_casting_order_to_both_housing_orders() -> None:
    plan = the_plan()
    (requisition,) = requisitions_from_plan(
        plan, today=START, suppliers=SUPPLIERS, supplier_items=OFFERS
    )
    assert requisition.planned_order == "PLN/casting/3"
    assert requisition.quantity == 50
    assert requisition.needed == NEEDED
    assert requisition.pegged == (
        PeggedDemand("PLN/housing/4", Decimal(20)),
        PeggedDemand("PLN/housing/5", Decimal(10)),
    )
    order = casting_order(plan)
    assert order.supplier == "BETA"
    assert order.lines[0].quantity == 60


def test_a_late_confirmation_names_every_sales_line_the_casting_serves() -> None:
    plan = the_plan()
    order = confirm(casting_order(plan), {1: LineAnswer(date=date(2026, 12, 16))}, NOW).order

    (alert,) = confirmation_alerts(plan, order)

    assert alert.kind is AlertKind.LATE_CONFIRMATION
    assert (alert.order, alert.line, alert.item) == ("PO-1", 1, "casting")
    assert alert.days == 2
    assert alert.quantity == 60
    assert alert.customer_orders == BOTH_ORDERS
    assert alert.message == (
        "PO-1 line 1 (casting): confirmed 2026-12-16, 2 days after the needed 2026-12-14; "
        "affects SO-1/1 (pump: 10), SO-2/1 (pump: 5)"
    )
    # The same orders as MRP's own trace from the planned order's pegged demands.
    traced = {
        found for pegged in order.lines[0].pegged for found in trace(plan, "casting", pegged.demand)
    }
    assert {(a.item, a.demand) for a in alert.affected} == traced


def test_a_short_confirmation_hits_the_latest_order_by_the_missing_pumps() -> None:
    plan = the_plan()
    confirmation = confirm(casting_order(plan), {1: LineAnswer(quantity=Decimal(26))}, NOW)

    (alert,) = confirmation_alerts(plan, confirmation.order)

    # 26 castings serve PLN/housing/4 (20) first; PLN/housing/5 gets 6 of 10: 4 castings
    # = 2 housings = 2 pumps of SO-2/1 short. SO-1/1 is served in full.
    assert alert.kind is AlertKind.SHORT_CONFIRMATION
    assert alert.quantity == 34
    assert alert.affected == (AffectedDemand("pump", "SO-2/1", DemandKind.SALES, Decimal(2)),)


def test_a_short_confirmation_the_lot_excess_absorbs_names_no_order() -> None:
    plan = the_plan()
    order = confirm(casting_order(plan), {1: LineAnswer(quantity=Decimal(30))}, NOW).order

    (alert,) = confirmation_alerts(plan, order)

    assert alert.kind is AlertKind.SHORT_CONFIRMATION
    assert alert.quantity == 30
    assert alert.affected == ()
    assert alert.message.endswith("affects no order")


def test_a_confirmation_as_asked_raises_nothing() -> None:
    plan = the_plan()
    order = confirm(casting_order(plan), {}, NOW).order
    assert confirmation_alerts(plan, order) == []
    assert delivery_alerts(plan, order, NEEDED) == []


def test_a_late_delivery_past_the_confirmed_date_names_both_orders() -> None:
    plan = the_plan()
    order = confirm(casting_order(plan), {}, NOW).order

    (alert,) = delivery_alerts(plan, order, date(2026, 12, 17))

    assert alert.kind is AlertKind.LATE_DELIVERY
    assert alert.days == 3
    assert alert.quantity == 60
    assert alert.customer_orders == BOTH_ORDERS


def test_a_short_delivery_names_only_what_the_received_part_does_not_cover() -> None:
    plan = the_plan()
    order = confirm(casting_order(plan), {}, NOW).order
    at = datetime(2026, 12, 12, 10, 0, tzinfo=UTC)
    order, _ = receive(order, 1, Decimal(22), "L-7", at)

    (alert,) = delivery_alerts(plan, order, date(2026, 12, 17))

    # 22 in: PLN/housing/4 (20) and 2 of PLN/housing/5; 8 castings = 4 pumps of SO-2/1 short.
    assert alert.kind is AlertKind.SHORT_DELIVERY
    assert alert.quantity == 38
    assert alert.affected == (AffectedDemand("pump", "SO-2/1", DemandKind.SALES, Decimal(4)),)


def test_a_replan_with_the_order_as_scheduled_receipt_names_the_same_orders() -> None:
    plan = the_plan()
    order = confirm(casting_order(plan), {}, NOW).order
    at = datetime(2026, 12, 12, 10, 0, tzinfo=UTC)
    order, _ = receive(order, 1, Decimal(22), "L-7", at)
    data = planning_data()
    data.set_receipts("casting", scheduled_receipts([order]))
    data.set_on_hand("casting", Decimal(22))
    replanned = regenerate(data)
    assert not replanned.records["casting"].planned_orders  # the PO covers the need now

    (alert,) = delivery_alerts(replanned, order, date(2026, 12, 17))

    assert alert.affected == (AffectedDemand("pump", "SO-2/1", DemandKind.SALES, Decimal(4)),)


def test_nothing_on_time_spreads_the_whole_pegged_quantity_and_enough_spreads_none() -> None:
    plan = the_plan()
    line = casting_order(plan).lines[0]
    order = casting_order(plan)
    assert affected_demands(plan, order, line, in_time=Decimal(0)) == BOTH_ORDERS
    assert affected_demands(plan, order, line, in_time=Decimal(30)) == ()


def test_draft_and_closed_orders_raise_no_alert() -> None:
    plan = the_plan()
    requisitions = requisitions_from_plan(
        plan, today=START, suppliers=SUPPLIERS, supplier_items=OFFERS
    )
    (draft,) = draft_orders(
        requisitions, SUPPLIERS, today=START, window_days=7, numbers=numbers(), created_at=NOW
    )
    assert delivery_alerts(plan, draft, date(2027, 1, 1)) == []
    cancelled = draft.cancelled(NOW)
    assert delivery_alerts(plan, cancelled, date(2027, 1, 1)) == []
    assert confirmation_alerts(plan, cancelled) == []
