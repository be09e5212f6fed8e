"""Supply alerts from the pegs a purchase order line keeps (an approved planned order's).

The plan and the casting order are test_purchasing_alerts.py's: PO-1 line 1, 60 castings for
PLN/housing/4 (20) and PLN/housing/5 (10), which serve SO-1/1 and SO-2/1 through the pumps.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

from taktline_cloud.planning.mrp import DemandKind, regenerate
from taktline_cloud.purchasing.alerts import AffectedDemand, AlertKind, confirmation_alerts
from taktline_cloud.purchasing.confirmations import LineAnswer, confirm
from taktline_cloud.purchasing.orders import scheduled_receipts
from taktline_cloud.purchasing.requisitions import PeggedDemand
from taktline_cloud.purchasing_service import empty_plan
from tests.unit.test_purchasing_alerts import NOW, START, casting_order, planning_data, the_plan


def test_a_short_confirmation_after_a_replan_is_judged_against_what_was_ordered() -> None:
    order = confirm(casting_order(the_plan()), {1: LineAnswer(quantity=Decimal(26))}, NOW).order
    data = planning_data()
    data.set_receipts("casting", scheduled_receipts([order]))
    replanned = regenerate(data)
    # The replan counts the confirmed 26 as the receipt and plans the rest anew: its pegs
    # alone would never show the 4 castings missing.
    receipt = [p for p in replanned.records["casting"].pegs if p.supply == "PO-1/1"]
    assert sum(p.quantity for p in receipt) == 26

    (alert,) = confirmation_alerts(replanned, order)

    assert alert.kind is AlertKind.SHORT_CONFIRMATION
    assert alert.affected == (AffectedDemand("pump", "SO-2/1", DemandKind.SALES, Decimal(2)),)


def test_without_a_plan_the_kept_pegs_name_the_sales_lines_they_are() -> None:
    order = casting_order(the_plan())
    (line,) = order.lines
    kept = (PeggedDemand("SO-9/2", Decimal(40)), PeggedDemand("safety-stock", Decimal(20)))
    order = replace(order, lines=(replace(line, pegged=kept, planned_order=None),))
    late = confirm(order, {1: LineAnswer(date=date(2026, 12, 16), quantity=Decimal(50))}, NOW)

    alerts = confirmation_alerts(empty_plan(START), late.order)

    assert [a.kind for a in alerts] == [AlertKind.LATE_CONFIRMATION, AlertKind.SHORT_CONFIRMATION]
    assert alerts[0].customer_orders == (
        AffectedDemand("casting", "SO-9/2", DemandKind.SALES, Decimal(40)),
    )
    assert "affects SO-9/2 (casting: 40)" in alerts[0].message
    # 10 short: FIFO leaves the latest demand (safety stock) short, no customer order.
    assert alerts[1].affected == (AffectedDemand("casting", "safety-stock", None, Decimal(10)),)
