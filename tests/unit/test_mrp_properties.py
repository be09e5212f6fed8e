"""MRP invariants over random plants (hypothesis).

Each plant has up to six items with a random acyclic BOM (scrap included), every lot-size
rule, lead times, safety stock, negative or positive on hand, demands (past due included) and
scheduled receipts. Whatever the data, a plan must satisfy the MRP table's arithmetic, keep
safety stock, peg every demand in full to supply available by its bucket, follow its lot-size
rule, and a net-change run must equal a regenerative run.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from taktline_cloud.planning.bom import BomLine
from taktline_cloud.planning.buckets import PAST_DUE, Buckets
from taktline_cloud.planning.items import ItemPlanning, LotRule, LotSize, Source
from taktline_cloud.planning.mrp import (
    NEGATIVE_ON_HAND,
    ON_HAND,
    SAFETY_STOCK,
    Demand,
    DemandKind,
    ExceptionKind,
    MrpPlan,
    PlanningData,
    ScheduledReceipt,
    net_change,
    regenerate,
)

START = date(2026, 11, 30)
BUCKETS = Buckets(START, 7, 6)

quantities = st.integers(1, 40).map(Decimal)
lot_sizes = st.one_of(
    st.just(LotSize.lot_for_lot()),
    st.integers(1, 30).map(lambda q: LotSize.fixed(Decimal(q))),
    st.tuples(st.integers(0, 30), st.integers(0, 12)).map(
        lambda mm: LotSize.min_multiple(Decimal(mm[0]), Decimal(mm[1]))
    ),
    st.integers(1, 4).map(LotSize.periods_of_supply),
)


def day(bucket: int) -> date:
    """A day in the bucket (bucket 7 is past the 6-week horizon)."""
    return START + timedelta(days=7 * (bucket - 1) + 3)


@st.composite
def demand_lists(draw: st.DrawFn, item: str, prefix: str) -> list[Demand]:
    entries = draw(st.lists(st.tuples(st.integers(0, 7), quantities), max_size=5))
    kinds = (DemandKind.SALES, DemandKind.FORECAST, DemandKind.WORK_ORDER)
    return [
        Demand(f"{prefix}-{item}-{n}", item, day(bucket), quantity, kinds[n % 3])
        for n, (bucket, quantity) in enumerate(entries)
    ]


@st.composite
def plants(draw: st.DrawFn) -> PlanningData:
    count = draw(st.integers(1, 6))
    names = [f"I{n}" for n in range(count)]
    items = [
        ItemPlanning(
            name,
            lead_time=draw(st.integers(0, 3)),
            safety_stock=Decimal(draw(st.sampled_from((0, 0, 5, 12)))),
            lot_size=draw(lot_sizes),
            source=draw(st.sampled_from(Source)),
        )
        for name in names
    ]
    bom = [
        BomLine(
            names[parent],
            names[component],
            draw(st.sampled_from((Decimal(1), Decimal(2), Decimal("0.5")))),
            draw(st.sampled_from((Decimal(0), Decimal("0.1")))),
        )
        for parent in range(count)
        for component in range(parent + 1, count)
        if draw(st.booleans())
    ]
    demands = [d for name in names for d in draw(demand_lists(name, "D"))]
    receipts = [
        ScheduledReceipt(f"PO-{n}", names[index], day(bucket), quantity)
        for n, (index, bucket, quantity) in enumerate(
            draw(
                st.lists(
                    st.tuples(st.integers(0, count - 1), st.integers(0, 7), quantities),
                    max_size=4,
                )
            )
        )
    ]
    on_hand = {name: Decimal(draw(st.sampled_from((-5, 0, 0, 7, 30)))) for name in names}
    return PlanningData(
        BUCKETS, items, bom=bom, demands=demands, receipts=receipts, on_hand=on_hand
    )


def check(data: PlanningData, plan: MrpPlan) -> None:
    """Every invariant of a plan, item by item."""
    assert set(plan.records) == set(data.items)
    for item, record in plan.records.items():
        planning = data.items[item]
        safety = planning.safety_stock
        # The table's arithmetic, and safety stock kept in every bucket.
        balance = record.on_hand
        for bucket in range(BUCKETS.size):
            balance += (
                record.scheduled[bucket] + record.planned_receipts[bucket] - record.gross[bucket]
            )
            assert record.projected[bucket] == balance
            assert balance >= safety
            demand_here = sum(
                (r.quantity for r in record.requirements if r.bucket == bucket), Decimal(0)
            )
            assert record.gross[bucket] == demand_here

        # When each supply is available in the plan, and how much there is of it.
        available: dict[str, int] = {ON_HAND: PAST_DUE}
        amount: dict[str, Decimal] = {ON_HAND: max(record.on_hand, Decimal(0))}
        moved = {m.order: m.to for m in record.exceptions if m.to is not None}
        cancelled = {m.order for m in record.exceptions if m.kind is ExceptionKind.CANCEL}
        for due, receipt_id, quantity in data.receipts.get(item, ()):
            to = moved.get(receipt_id)
            available[receipt_id] = due if to is None else to
            amount[receipt_id] = Decimal(0) if receipt_id in cancelled else quantity
        for order in record.planned_orders:
            available[order.id] = order.due
            amount[order.id] = order.quantity

        # Pegged quantities sum to each demand, from supply available by the demand's bucket.
        pegged: dict[str, Decimal] = defaultdict(Decimal)
        used: dict[str, Decimal] = defaultdict(Decimal)
        due_of = {r.id: r.bucket for r in record.requirements}
        for peg in record.pegs:
            assert peg.quantity > 0
            pegged[peg.demand] += peg.quantity
            used[peg.supply] += peg.quantity
            if peg.demand in due_of:
                assert available[peg.supply] <= due_of[peg.demand]
        for requirement in record.requirements:
            assert pegged.pop(requirement.id) == requirement.quantity
        if safety:
            assert pegged.pop(SAFETY_STOCK) == safety
        if record.on_hand < 0:
            assert pegged.pop(NEGATIVE_ON_HAND) == -record.on_hand
        assert not pegged
        for supply, quantity in used.items():
            assert quantity <= amount[supply]

        # Planned orders: cover the net requirement, follow the lot rule and the lead time.
        lot = planning.lot_size
        past_due = {m.order for m in record.exceptions if m.kind is ExceptionKind.PAST_DUE}
        for order in record.planned_orders:
            assert order.quantity >= record.net[order.due] > 0
            assert order.source is planning.source
            if lot.rule is LotRule.LOT_FOR_LOT:
                assert order.quantity == record.net[order.due]
            elif lot.rule is LotRule.FIXED:
                assert order.quantity % lot.quantity == 0
            elif lot.rule is LotRule.PERIODS_OF_SUPPLY:
                window = record.gross[order.due + 1 : order.due + lot.periods]
                assert order.quantity == record.net[order.due] + sum(window, Decimal(0))
            elif lot.rule is LotRule.MIN_MULTIPLE:
                assert order.quantity >= lot.minimum
                assert lot.multiple == 0 or order.quantity % lot.multiple == 0
            offset = order.due - planning.lead_time
            assert order.release == (offset if offset >= 1 else PAST_DUE)
            assert (order.id in past_due) == (offset < 1)

        # Dependent demand is the parents' planned orders x per x (1 + scrap) at their release.
        expected = sorted(
            (order.release, order.id, order.quantity * factor)
            for parent, components in data.children.items()
            for component, factor in components
            if component == item
            for order in plan.records[parent].planned_orders
        )
        dependent = sorted(
            (r.bucket, r.id, r.quantity)
            for r in record.requirements
            if r.kind is DemandKind.DEPENDENT
        )
        assert dependent == expected


@settings(max_examples=300, deadline=None)
@given(plants())
def test_a_regenerative_plan_keeps_every_invariant(data: PlanningData) -> None:
    check(data, regenerate(data))


def below(data: PlanningData, items: set[str]) -> set[str]:
    """The items and every component under them, at any depth."""
    found = set(items)
    stack = list(items)
    while stack:
        for component, _ in data.children.get(stack.pop(), ()):
            if component not in found:
                found.add(component)
                stack.append(component)
    return found


@settings(max_examples=200, deadline=None)
@given(plants(), st.data())
def test_net_change_equals_a_regenerative_run(data: PlanningData, draw: st.DataObject) -> None:
    plan = regenerate(data)
    names = sorted(data.items)
    for step in range(draw.draw(st.integers(1, 3))):
        changed: set[str] = set()
        for item in draw.draw(st.lists(st.sampled_from(names), min_size=1, max_size=2)):
            change = draw.draw(st.sampled_from(("count", "sales", "po", "item")))
            if change == "count":
                data.set_on_hand(item, Decimal(draw.draw(st.integers(-5, 60))))
            elif change == "sales":
                data.set_demands(item, draw.draw(demand_lists(item, f"S{step}")))
            elif change == "po":
                bucket = draw.draw(st.integers(0, 7))
                receipt = ScheduledReceipt(f"PO-{step}", item, day(bucket), Decimal(25))
                data.set_receipts(item, [receipt])
            else:
                old = data.items[item]
                data.set_item(
                    ItemPlanning(
                        item,
                        lead_time=draw.draw(st.integers(0, 3)),
                        safety_stock=old.safety_stock,
                        lot_size=draw.draw(lot_sizes),
                        source=old.source,
                    )
                )
            changed.add(item)
        previous = plan
        plan = net_change(previous, data, changed)
        assert set(plan.replanned) <= below(data, changed)
        assert changed <= set(plan.replanned)
        for item in set(data.items) - set(plan.replanned):
            assert plan.records[item] is previous.records[item]
        full = regenerate(data)
        assert plan.records == full.records
        assert plan.dependent == full.dependent
        check(data, plan)
