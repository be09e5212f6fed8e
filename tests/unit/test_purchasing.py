"""Purchasing rules worked by hand: sourcing, pack rounding, drafting, states, confirmations,
receipts with tolerance, and the supplier scope rule."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from taktline_cloud.errors import Conflict, Forbidden, Invalid, NotFound
from taktline_cloud.planning.bom import BomLine
from taktline_cloud.planning.items import ItemPlanning, LotSize, Source
from taktline_cloud.planning.mrp import Demand, PlanningData, regenerate
from taktline_cloud.purchasing.confirmations import (
    DateChange,
    LineAnswer,
    QuantityChange,
    confirm,
)
from taktline_cloud.purchasing.orders import (
    TRANSITIONS,
    PoStatus,
    PurchaseOrder,
    draft_orders,
    scheduled_receipts,
    transition,
)
from taktline_cloud.purchasing.receipts import receivable, receive
from taktline_cloud.purchasing.requisitions import (
    RequisitionSource,
    manual_requisition,
    requisitions_from_plan,
)
from taktline_cloud.purchasing.scope import Action, Actor, can_act, require
from taktline_cloud.purchasing.scope import visible_orders as visible
from taktline_cloud.purchasing.suppliers import (
    SourcingReason,
    Supplier,
    SupplierItem,
    choose_supplier,
)
from tests.unit.test_purchasing_alerts import BUCKETS, NOW, START, numbers

ACME = Supplier("ACME", "Acme Castings", lead_days=5, over_receipt_tolerance=Decimal("0.05"))
BETA = Supplier("BETA", "Beta Foundry", lead_days=10)
SUPPLIERS = {"ACME": ACME, "BETA": BETA}
D = Decimal
LATER = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)


# --- pack size and minimum -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minimum", "pack", "need", "expected"),
    [
        (0, 0, "7.5", "7.5"),  # any quantity
        (0, 12, 50, 60),  # 5 packs of 12
        (0, 12, 48, 48),  # exactly 4 packs
        (70, 12, 50, 72),  # the minimum 70, then 6 packs
        (60, 0, 50, 60),  # the minimum alone
        (60, 0, 61, 61),
        (0, "0.5", "2.1", "2.5"),  # a fractional pack (kg)
    ],
)
def test_the_order_quantity_is_rounded_up_to_the_minimum_then_to_whole_packs(
    minimum: int, pack: int | str, need: int | str, expected: int | str
) -> None:
    offer = SupplierItem(
        "ACME", "casting", Decimal(1), minimum=Decimal(minimum), pack_size=Decimal(str(pack))
    )
    assert offer.order_quantity(Decimal(str(need))) == Decimal(str(expected))


def test_a_zero_order_quantity_is_refused() -> None:
    with pytest.raises(Invalid, match="must be > 0"):
        SupplierItem("ACME", "casting", Decimal(1)).order_quantity(Decimal(0))


# --- the sourcing rule -----------------------------------------------------------------------


def offers(*, acme_preferred: bool = False, acme_lead: int | None = None) -> list[SupplierItem]:
    return [
        SupplierItem(
            "ACME",
            "casting",
            Decimal("3.00"),
            pack_size=Decimal(12),
            lead_days=acme_lead,
            preferred=acme_preferred,
        ),
        SupplierItem("BETA", "casting", Decimal("2.50"), minimum=Decimal(60)),
    ]


def test_the_cheapest_order_cost_wins_when_both_meet_the_date() -> None:
    # ACME: 60 (5 packs) x 3.00 = 180; BETA: 60 (minimum) x 2.50 = 150.
    sourcing = choose_supplier(
        "casting",
        Decimal(50),
        date(2026, 12, 14),
        today=START,
        suppliers=SUPPLIERS,
        supplier_items=offers(),
    )
    assert sourcing is not None
    assert (sourcing.supplier, sourcing.quantity, sourcing.amount) == ("BETA", D(60), D(150))
    assert sourcing.reason is SourcingReason.CHEAPEST
    assert sourcing.delivery == date(2026, 12, 10)
    assert sourcing.order_by == date(2026, 12, 4)
    assert sourcing.meets_date


def test_the_preferred_supplier_wins_when_it_meets_the_date() -> None:
    sourcing = choose_supplier(
        "casting",
        Decimal(50),
        date(2026, 12, 14),
        today=START,
        suppliers=SUPPLIERS,
        supplier_items=offers(acme_preferred=True),
    )
    assert sourcing is not None
    assert (sourcing.supplier, sourcing.reason) == ("ACME", SourcingReason.PREFERRED)


def test_a_preferred_supplier_that_is_too_late_loses_to_the_cheapest_on_time() -> None:
    # ACME's own lead time for castings is 20 days: 20 Dec, after the needed 14 Dec.
    sourcing = choose_supplier(
        "casting",
        Decimal(50),
        date(2026, 12, 14),
        today=START,
        suppliers=SUPPLIERS,
        supplier_items=offers(acme_preferred=True, acme_lead=20),
    )
    assert sourcing is not None
    assert (sourcing.supplier, sourcing.reason) == ("BETA", SourcingReason.CHEAPEST)


def test_when_nobody_meets_the_date_the_earliest_delivery_wins_and_is_marked_late() -> None:
    # Needed 3 Dec: ACME delivers 5 Dec, BETA 10 Dec; BETA is cheaper but later.
    sourcing = choose_supplier(
        "casting",
        Decimal(50),
        date(2026, 12, 3),
        today=START,
        suppliers=SUPPLIERS,
        supplier_items=offers(),
    )
    assert sourcing is not None
    assert (sourcing.supplier, sourcing.reason) == ("ACME", SourcingReason.EARLIEST)
    assert not sourcing.meets_date
    assert sourcing.delivery == date(2026, 12, 5)


def test_prices_in_two_currencies_are_compared_through_the_rates() -> None:
    gbp = {**SUPPLIERS, "ACME": Supplier("ACME", "Acme", lead_days=5, currency="GBP")}
    items = offers()
    with pytest.raises(Invalid, match=r"quote in EUR, GBP: no exchange rate for GBP$"):
        choose_supplier(
            "casting",
            Decimal(50),
            date(2026, 12, 14),
            today=START,
            suppliers=gbp,
            supplier_items=items,
            rates={"EUR": Decimal(1)},
        )
    # 180 GBP at 0.8 EUR per GBP = 144 EUR, cheaper than BETA's 150 EUR.
    sourcing = choose_supplier(
        "casting",
        Decimal(50),
        date(2026, 12, 14),
        today=START,
        suppliers=gbp,
        supplier_items=items,
        rates={"GBP": Decimal("0.8"), "EUR": Decimal(1)},
    )
    assert sourcing is not None
    assert (sourcing.supplier, sourcing.currency) == ("ACME", "GBP")


def test_an_item_nobody_sells_gets_no_sourcing() -> None:
    assert (
        choose_supplier(
            "bolt",
            Decimal(5),
            date(2026, 12, 14),
            today=START,
            suppliers=SUPPLIERS,
            supplier_items=offers(),
        )
        is None
    )


# --- requisitions and drafting ---------------------------------------------------------------


def bolts_and_castings_plan() -> PlanningData:
    """pump (make, lead 1) <- casting x2 (buy, lot-for-lot) and bolt x4 (buy, lot-for-lot)."""
    items = [
        ItemPlanning("pump", lead_time=1, source=Source.MAKE),
        ItemPlanning("casting", lead_time=1, lot_size=LotSize.lot_for_lot()),
        ItemPlanning("bolt", lead_time=1),
    ]
    bom = [BomLine("pump", "casting", Decimal(2)), BomLine("pump", "bolt", Decimal(4))]
    demands = [
        Demand("SO-1/1", "pump", date(2026, 12, 23), Decimal(10)),  # week 4
        Demand("SO-2/1", "pump", date(2026, 12, 30), Decimal(5)),  # week 5
    ]
    return PlanningData(BUCKETS, items, bom=bom, demands=demands)


BOLT = SupplierItem("ACME", "bolt", Decimal("0.10"), pack_size=Decimal(100))


def test_every_planned_buy_order_becomes_a_sourced_requisition_and_make_orders_do_not() -> None:
    plan = regenerate(bolts_and_castings_plan())
    requisitions = requisitions_from_plan(
        plan, today=START, suppliers=SUPPLIERS, supplier_items=[*offers(), BOLT]
    )
    got = [(r.id, r.item, r.quantity, r.needed) for r in requisitions]
    assert got == [
        ("REQ/PLN/bolt/3", "bolt", D(40), date(2026, 12, 14)),
        ("REQ/PLN/bolt/4", "bolt", D(20), date(2026, 12, 21)),
        ("REQ/PLN/casting/3", "casting", D(20), date(2026, 12, 14)),
        ("REQ/PLN/casting/4", "casting", D(10), date(2026, 12, 21)),
    ]
    assert all(r.source is RequisitionSource.MRP for r in requisitions)
    bolt = requisitions[0]
    assert bolt.sourcing is not None
    assert (bolt.sourcing.supplier, bolt.sourcing.quantity) == ("ACME", D(100))  # one pack


def test_drafting_groups_by_supplier_and_order_window() -> None:
    plan = regenerate(bolts_and_castings_plan())
    beta_castings = [o for o in offers() if o.supplier == "BETA"]
    requisitions = requisitions_from_plan(
        plan, today=START, suppliers=SUPPLIERS, supplier_items=[*beta_castings, BOLT]
    )
    # Order-by dates: bolts (ACME, 5 days) 9 and 16 Dec; castings (BETA, 10 days) 4 and 11 Dec.
    # 14-day windows from 30 Nov: 30 Nov-13 Dec holds all but the 16 Dec bolts.
    orders = draft_orders(
        requisitions, SUPPLIERS, today=START, window_days=14, numbers=numbers(), created_at=NOW
    )
    got = [
        (o.number, o.supplier, o.order_date, [(ln.number, ln.item, ln.needed) for ln in o.lines])
        for o in orders
    ]
    assert got == [
        ("PO-1", "ACME", START, [(1, "bolt", date(2026, 12, 14))]),
        (
            "PO-2",
            "BETA",
            START,
            [(1, "casting", date(2026, 12, 14)), (2, "casting", date(2026, 12, 21))],
        ),
        ("PO-3", "ACME", date(2026, 12, 14), [(1, "bolt", date(2026, 12, 21))]),
    ]
    assert all(o.status is PoStatus.DRAFT for o in orders)
    assert orders[0].over_receipt_tolerance == Decimal("0.05")  # copied from ACME
    assert orders[1].lines[0].quantity == 60  # BETA's minimum
    assert orders[1].lines[0].requested == 20
    assert orders[1].amount == 300  # two lines of 60 at 2.50


def test_a_requisition_without_supplier_cannot_be_drafted() -> None:
    requisition = manual_requisition(
        "REQ-9",
        "bolt",
        Decimal(5),
        date(2026, 12, 14),
        today=START,
        suppliers=SUPPLIERS,
        supplier_items=offers(),
    )
    assert requisition.sourcing is None
    assert requisition.source is RequisitionSource.MANUAL
    with pytest.raises(Invalid, match="no supplier sells bolt"):
        draft_orders(
            [requisition],
            SUPPLIERS,
            today=START,
            window_days=7,
            numbers=numbers(),
            created_at=NOW,
        )


def one_line_order(quantity: int = 100, tolerance: str = "0.05") -> PurchaseOrder:
    supplier = Supplier("ACME", "Acme", lead_days=5, over_receipt_tolerance=Decimal(tolerance))
    requisition = manual_requisition(
        "REQ-1",
        "bolt",
        Decimal(quantity),
        date(2026, 12, 14),
        today=START,
        suppliers={"ACME": supplier},
        supplier_items=[SupplierItem("ACME", "bolt", Decimal("0.10"))],
    )
    (order,) = draft_orders(
        [requisition],
        {"ACME": supplier},
        today=START,
        window_days=7,
        numbers=numbers(),
        created_at=NOW,
    )
    return order


def two_line_order() -> PurchaseOrder:
    suppliers = {"ACME": ACME}
    offer = [SupplierItem("ACME", "bolt", Decimal("0.10"))]
    requisitions = [
        manual_requisition(
            f"REQ-{n}",
            "bolt",
            Decimal(100),
            needed,
            today=START,
            suppliers=suppliers,
            supplier_items=offer,
        )
        for n, needed in ((1, date(2026, 12, 14)), (2, date(2026, 12, 21)))
    ]
    (order,) = draft_orders(
        requisitions, suppliers, today=START, window_days=30, numbers=numbers(), created_at=NOW
    )
    return order


# --- the state machine -----------------------------------------------------------------------


def test_the_happy_path_from_draft_to_closed() -> None:
    order = one_line_order().sent(NOW)
    assert (order.status, order.sent_at) == (PoStatus.SENT, NOW)
    order = confirm(order, {}, NOW).order
    assert order.status is PoStatus.CONFIRMED
    order, _ = receive(order, 1, Decimal(40), "L-1", LATER)
    assert order.status is PoStatus.PARTIALLY_RECEIVED
    order, receipt = receive(order, 1, Decimal(60), "L-2", LATER)
    assert order.status is PoStatus.RECEIVED
    assert receipt.line_closed
    order = order.closed(LATER)
    assert (order.status, order.closed_at) == (PoStatus.CLOSED, LATER)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (current, target)
        for current in PoStatus
        for target in PoStatus
        if target not in TRANSITIONS[current]
    ],
)
def test_every_transition_outside_the_table_is_a_conflict(
    current: PoStatus, target: PoStatus
) -> None:
    with pytest.raises(Conflict, match=f"PO-9 is {current}: cannot become {target}"):
        transition("PO-9", current, target)


def test_commands_on_orders_in_the_wrong_state_are_conflicts() -> None:
    draft = one_line_order()
    with pytest.raises(Conflict, match="is draft: cannot become confirmed"):
        confirm(draft, {}, NOW)
    with pytest.raises(Conflict, match="is draft: cannot become partially-received"):
        receive(draft, 1, Decimal(1), "L-1", NOW)
    with pytest.raises(Conflict, match="is draft: cannot become closed"):
        draft.closed(NOW)
    sent = draft.sent(NOW)
    with pytest.raises(Conflict, match="is sent: cannot become sent"):
        sent.sent(NOW)
    with pytest.raises(Conflict, match="is sent: cannot become partially-received"):
        receive(sent, 1, Decimal(1), "L-1", NOW)  # receipts need a confirmation
    cancelled = sent.cancelled(NOW)
    with pytest.raises(Conflict, match="is cancelled: cannot become confirmed"):
        confirm(cancelled, {}, NOW)
    partly, _ = receive(confirm(sent, {}, NOW).order, 1, Decimal(1), "L-1", NOW)
    with pytest.raises(Conflict, match="is partially-received: cannot become cancelled"):
        partly.cancelled(NOW)
    assert partly.closed(NOW).status is PoStatus.CLOSED  # closed short instead


def test_naive_timestamps_are_refused() -> None:
    naive = datetime(2026, 11, 30, 8, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(Invalid, match="naive datetime"):
        one_line_order().sent(naive)


# --- supplier confirmations ------------------------------------------------------------------


def test_a_confirmation_says_what_changed_on_each_line() -> None:
    order = two_line_order().sent(NOW)
    confirmation = confirm(
        order,
        {
            1: LineAnswer(date=date(2026, 12, 16), quantity=Decimal(80)),
            2: LineAnswer(date=date(2026, 12, 18), quantity=Decimal(120)),
        },
        NOW,
    )
    first, second = confirmation.changes
    assert (first.date_change, first.days) == (DateChange.LATER, 2)
    assert (first.quantity_change, first.delta) == (QuantityChange.SHORTER, D(-20))
    assert (second.date_change, second.days) == (DateChange.EARLIER, -3)
    assert (second.quantity_change, second.delta) == (QuantityChange.LONGER, D(20))
    assert confirmation.order.status is PoStatus.CHANGED
    line = confirmation.order.line(1)
    assert (line.expected_date, line.agreed_quantity) == (date(2026, 12, 16), D(80))


def test_changes_are_measured_against_the_previous_confirmation() -> None:
    order = two_line_order().sent(NOW)
    order = confirm(order, {1: LineAnswer(date=date(2026, 12, 16))}, NOW).order
    assert order.status is PoStatus.CHANGED
    # The supplier finds the capacity after all: back to the ordered date, two days earlier.
    confirmation = confirm(order, {1: LineAnswer(date=date(2026, 12, 14))}, LATER)
    assert [(c.line, c.date_change, c.days) for c in confirmation.changed] == [
        (1, DateChange.EARLIER, -2)
    ]
    assert confirmation.order.status is PoStatus.CONFIRMED  # as ordered again
    assert confirmation.order.confirmed_at == LATER


def test_an_unmentioned_line_is_confirmed_as_asked() -> None:
    confirmation = confirm(two_line_order().sent(NOW), {2: LineAnswer()}, NOW)
    assert confirmation.changed == ()
    assert confirmation.order.status is PoStatus.CONFIRMED
    assert [ln.confirmed_quantity for ln in confirmation.order.lines] == [100, 100]


def test_confirmations_the_order_cannot_take() -> None:
    order = two_line_order().sent(NOW)
    with pytest.raises(NotFound, match="no line 3"):
        confirm(order, {3: LineAnswer(quantity=Decimal(1))}, NOW)
    with pytest.raises(Invalid, match="must be >= 0"):
        confirm(order, {1: LineAnswer(quantity=Decimal(-1))}, NOW)
    order, _ = receive(confirm(order, {}, NOW).order, 1, Decimal(30), "L-1", NOW)
    with pytest.raises(Conflict, match="cannot confirm 20, 30 already received"):
        confirm(order, {1: LineAnswer(quantity=Decimal(20))}, NOW)
    # After a first receipt the supplier may still move the open line; the status stays.
    moved = confirm(order, {2: LineAnswer(date=date(2026, 12, 28))}, NOW).order
    assert moved.status is PoStatus.PARTIALLY_RECEIVED
    order, _ = receive(order, 1, Decimal(70), "L-2", NOW)
    with pytest.raises(Conflict, match="line 1 is fully received"):
        confirm(order, {1: LineAnswer(date=date(2026, 12, 20))}, NOW)


# --- receipts and the over-receipt tolerance -------------------------------------------------


def confirmed(order: PurchaseOrder) -> PurchaseOrder:
    return confirm(order.sent(NOW), {}, NOW).order


def test_a_receipt_within_the_tolerance_closes_the_line() -> None:
    order, receipt = receive(confirmed(one_line_order()), 1, Decimal(104), "L-1", LATER)
    assert (receipt.order, receipt.line, receipt.item, receipt.lot) == ("PO-1", 1, "bolt", "L-1")
    assert (receipt.quantity, receipt.unit_price, receipt.received_at) == (
        D(104),
        D("0.10"),
        LATER,
    )
    assert receipt.line_closed
    assert order.status is PoStatus.RECEIVED
    assert order.line(1).received == 104


def test_a_receipt_beyond_the_tolerance_is_refused() -> None:
    order = confirmed(one_line_order())
    assert receivable(order, 1) == Decimal("105.00")
    with pytest.raises(Conflict, match=r"exceed the agreed 100 by more than the 5 % tolerance"):
        receive(order, 1, Decimal("105.01"), "L-1", LATER)
    assert receive(order, 1, Decimal(105), "L-1", LATER)[0].line(1).received == 105


def test_the_tolerance_counts_every_receipt_of_the_line() -> None:
    order, _ = receive(confirmed(one_line_order()), 1, Decimal(60), "L-1", LATER)
    assert receivable(order, 1) == 45
    with pytest.raises(Conflict, match="at most 45 more"):
        receive(order, 1, Decimal(46), "L-2", LATER)
    order, _ = receive(order, 1, Decimal(45), "L-2", LATER)
    assert [r.lot for r in order.line(1).receipts] == ["L-1", "L-2"]


def test_a_fully_received_line_takes_no_more_even_within_the_tolerance() -> None:
    order, _ = receive(confirmed(two_line_order()), 1, Decimal(100), "L-1", LATER)
    assert order.status is PoStatus.PARTIALLY_RECEIVED  # line 2 is still open
    assert receivable(order, 1) == 0
    with pytest.raises(Conflict, match="line 1 is fully received"):
        receive(order, 1, Decimal(1), "L-2", LATER)


def test_with_no_tolerance_only_the_agreed_quantity_is_received() -> None:
    order = confirmed(one_line_order(tolerance="0"))
    with pytest.raises(Conflict, match="at most 100 more"):
        receive(order, 1, Decimal("100.5"), "L-1", LATER)


def test_the_confirmed_quantity_is_what_the_tolerance_applies_to() -> None:
    order = confirm(one_line_order().sent(NOW), {1: LineAnswer(quantity=Decimal(80))}, NOW).order
    assert receivable(order, 1) == 84
    order, receipt = receive(order, 1, Decimal(80), "L-1", LATER)
    assert receipt.line_closed
    assert order.status is PoStatus.RECEIVED


def test_receipts_need_a_lot_and_a_positive_quantity() -> None:
    order = confirmed(one_line_order())
    with pytest.raises(Invalid, match="needs a lot number"):
        receive(order, 1, Decimal(1), " ", LATER)
    with pytest.raises(Invalid, match="must be > 0"):
        receive(order, 1, Decimal(0), "L-1", LATER)
    with pytest.raises(NotFound, match="no line 2"):
        receive(order, 2, Decimal(1), "L-1", LATER)


def test_open_lines_are_mrp_scheduled_receipts_at_their_expected_date() -> None:
    order = confirm(two_line_order().sent(NOW), {2: LineAnswer(date=date(2026, 12, 28))}, NOW).order
    order, _ = receive(order, 1, Decimal(30), "L-1", LATER)
    got = [(r.id, r.item, r.due, r.quantity) for r in scheduled_receipts([order])]
    assert got == [
        ("PO-1/1", "bolt", date(2026, 12, 14), D(70)),
        ("PO-1/2", "bolt", date(2026, 12, 28), D(100)),
    ]
    assert scheduled_receipts([order.closed(LATER)]) == []


# --- the supplier scope rule -----------------------------------------------------------------


def test_a_supplier_user_sees_and_confirms_only_its_own_sent_orders() -> None:
    draft = one_line_order()  # PO-1 to ACME
    sent = draft.sent(NOW)
    other = PurchaseOrder("PO-2", "BETA", "EUR", PoStatus.SENT, START, sent.lines, NOW, sent_at=NOW)
    acme = Actor("anna@acme", supplier="ACME")
    buyer = Actor("bob")

    assert visible(acme, [draft, other]) == []  # a draft is not sent yet
    assert visible(acme, [sent, other]) == [sent]
    assert visible(buyer, [draft, sent, other]) == [draft, sent, other]

    require(acme, sent, Action.CONFIRM)
    require(acme, sent, Action.VIEW)
    for action in (Action.SEND, Action.RECEIVE, Action.CANCEL, Action.CLOSE):
        assert not can_act(acme, sent, action)
        with pytest.raises(Forbidden, match=f"anna@acme may not {action}"):
            require(acme, sent, action)
    with pytest.raises(NotFound, match="PO-2 not found"):
        require(acme, other, Action.VIEW)
    assert all(can_act(buyer, other, action) for action in Action)
