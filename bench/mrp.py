"""MRP at plant scale: 10 000 items, 6-level BOMs, 50 000 demands; full and net-change runs.

Issue 5 asks a full MRP run over 10 000 items with 6-level BOMs and 50 000 demands in under 5 s
on this 2-core machine, and a net-change run after one count posting in under 100 ms. This
builds a seeded plant (52 weekly buckets; every lot-size rule, lead times of 0-3 weeks, safety
stock on a third of the items, open purchase orders on bought items) and times, median of
`--runs`:

* regenerative: `mrp.regenerate` over every item (gross-to-net, lot sizing, messages, pegging);
* net change after one count posting: `set_on_hand` on one item, then `mrp.net_change` for it
  (each run a different item of the middle levels, so the items below it are re-planned too);
  and after one changed sales order of an end item (its whole BOM below it);
* baseline, same run and same data: a plain Python pass with no MRP logic, each demand added
  into its item's bucket row and every BOM line's parent row exploded into its component's
  row (one Decimal multiply-add per line and bucket): the arithmetic any MRP does at least.

The result of the net-change runs is checked against a regenerative run of the same data.

    uv run python bench/mrp.py [--items 10000] [--demands 50000] [--runs 3] [--seed 5]

Stops by itself (about a minute).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from taktline_cloud.planning.bom import BomLine
from taktline_cloud.planning.buckets import Buckets
from taktline_cloud.planning.items import ItemPlanning, LotSize, Source
from taktline_cloud.planning.mrp import (
    Demand,
    DemandKind,
    MrpPlan,
    PlanningData,
    ScheduledReceipt,
    net_change,
    regenerate,
)

START = date(2026, 11, 30)
WEEKS = 52
LEVEL_SHARES = (0.10, 0.15, 0.15, 0.20, 0.20, 0.20)  # of the items, levels 0 (end items) to 5


def build(items: int, demands: int, seed: int) -> PlanningData:
    """A seeded plant: items by level, BOM lines from each level to the ones below, demands."""
    rng = random.Random(seed)
    levels: list[list[str]] = []
    made = 0
    for level, share in enumerate(LEVEL_SHARES):
        count = round(items * share) if level < len(LEVEL_SHARES) - 1 else items - made
        levels.append([f"L{level}-{n:05d}" for n in range(count)])
        made += count
    lot_sizes = (
        LotSize.lot_for_lot(),
        LotSize.fixed(Decimal(500)),
        LotSize.min_multiple(Decimal(100), Decimal(25)),
        LotSize.periods_of_supply(4),
    )
    plannings: list[ItemPlanning] = []
    bom: list[BomLine] = []
    for level, names in enumerate(levels):
        bought = level == len(levels) - 1
        for name in names:
            safety = Decimal(rng.choice((0, 0, 20)))
            plannings.append(
                ItemPlanning(
                    name,
                    lead_time=rng.randint(0, 3),
                    safety_stock=safety,
                    lot_size=rng.choice(lot_sizes),
                    source=Source.BUY if bought else Source.MAKE,
                )
            )
            if bought:
                continue
            components = {rng.choice(levels[level + 1])}
            for _ in range(rng.randint(1, 3)):
                components.add(rng.choice(levels[rng.randint(level + 1, len(levels) - 1)]))
            for component in sorted(components):
                per = Decimal(rng.choice((1, 1, 2, 4)))
                scrap = Decimal(rng.choice(("0", "0", "0.02", "0.05")))
                bom.append(BomLine(name, component, per, scrap))
    end_items = levels[0]
    others = [name for names in levels[1:] for name in names]
    demand_list: list[Demand] = []
    for n in range(demands):
        spare = n % 10 == 9  # a tenth are spare-part orders on components
        item = rng.choice(others if spare else end_items)
        due = START + timedelta(days=rng.randrange(-7, WEEKS * 7))
        kind = DemandKind.FORECAST if n % 3 == 2 else DemandKind.SALES
        demand_list.append(Demand(f"SO-{n}", item, due, Decimal(rng.randint(1, 50)), kind))
    receipts = [
        ScheduledReceipt(
            f"PO-{n}",
            rng.choice(levels[-1]),
            START + timedelta(days=rng.randrange(-7, 12 * 7)),
            Decimal(rng.randint(1, 20) * 50),
        )
        for n in range(len(levels[-1]) // 2)
    ]
    on_hand = {name: Decimal(rng.choice((0, 0, 50, 200))) for name in others + end_items}
    return PlanningData(
        Buckets(START, 7, WEEKS),
        plannings,
        bom=bom,
        demands=demand_list,
        receipts=receipts,
        on_hand=on_hand,
    )


def baseline(data: PlanningData) -> int:
    """Plain Python over the same data: bucket rows of demand, exploded down every BOM line."""
    size = data.buckets.size
    zero = Decimal(0)
    rows = {item: [zero] * size for item in data.items}
    for item, requirements in data.demands.items():
        row = rows[item]
        for requirement in requirements:
            row[requirement.bucket] += requirement.quantity
    for item in data.order:
        row = rows[item]
        for component, factor in data.children.get(item, ()):
            target = rows[component]
            for bucket in range(size):
                quantity = row[bucket]
                if quantity:
                    target[bucket] += quantity * factor
    return len(rows)


def median_s(runs: int, call: Callable[[], object]) -> tuple[float, object]:
    """Median wall time of `runs` calls, with the last call's result."""
    times: list[float] = []
    result: object = None
    for _ in range(runs):
        began = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--demands", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    print(
        f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    began = time.perf_counter()
    data = build(args.items, args.demands, args.seed)
    lines = sum(len(components) for components in data.children.values())
    depth = max(data.low_level_codes.values()) + 1
    print(
        f"built {len(data.items)} items, {lines} BOM lines, {depth} levels,"
        f" {sum(len(r) for r in data.demands.values())} demands,"
        f" {sum(len(r) for r in data.receipts.values())} open POs,"
        f" {data.buckets.size} buckets in {time.perf_counter() - began:.1f} s"
    )

    base_s, _ = median_s(args.runs, lambda: baseline(data))
    full_s, result = median_s(args.runs, lambda: regenerate(data))
    plan = result
    assert isinstance(plan, MrpPlan)
    orders = sum(len(r.planned_orders) for r in plan.records.values())
    pegs = sum(len(r.pegs) for r in plan.records.values())
    requirements = sum(len(r.requirements) for r in plan.records.values())
    messages = sum(len(r.exceptions) for r in plan.records.values())
    print(
        f"plan: {orders} planned orders, {requirements} gross requirements,"
        f" {pegs} pegs, {messages} exception messages"
    )

    rng = random.Random(args.seed + 1)
    middle = [item for item in data.order if data.low_level_codes[item] in (2, 3)]
    end_items = [item for item in data.order if data.low_level_codes[item] == 0]
    count_times: list[float] = []
    count_sizes: list[int] = []
    order_times: list[float] = []
    order_sizes: list[int] = []
    for _ in range(max(args.runs, 5)):
        item = rng.choice(middle)
        data.set_on_hand(item, data.on_hand.get(item, Decimal(0)) + Decimal(37))
        began = time.perf_counter()
        plan = net_change(plan, data, [item])
        count_times.append(time.perf_counter() - began)
        count_sizes.append(len(plan.replanned))
        end_item = rng.choice(end_items)
        requirements_now = data.demands.get(end_item, [])
        changed = [
            Demand(r.id, end_item, data.buckets.first_day(max(r.bucket, 1)), r.quantity + 5)
            for r in requirements_now
        ] or [Demand("SO-new", end_item, START + timedelta(days=20), Decimal(10))]
        data.set_demands(end_item, changed)
        began = time.perf_counter()
        plan = net_change(plan, data, [end_item])
        order_times.append(time.perf_counter() - began)
        order_sizes.append(len(plan.replanned))
    check = regenerate(data)
    same = check.records == plan.records
    print(f"net-change plans equal a regenerative run of the same data: {same}")
    count_s = statistics.median(count_times)
    order_s = statistics.median(order_times)

    print(f"regenerative MRP, {len(data.items)} items:        {full_s * 1000:8.0f} ms")
    print(
        f"net change, one count posting (median):  {count_s * 1000:8.1f} ms,"
        f" {statistics.median(count_sizes):.0f} items re-planned (max {max(count_sizes)})"
    )
    print(
        f"net change, one sales order (median):    {order_s * 1000:8.1f} ms,"
        f" {statistics.median(order_sizes):.0f} items re-planned (max {max(order_sizes)})"
    )
    print(f"baseline plain pass (bucket + explode):  {base_s * 1000:8.0f} ms")
    print(f"ratio regenerative / baseline:           {full_s / base_s:8.2f}")
    print(f"ratio net change (count) / baseline:     {count_s / base_s:8.4f}")
    print(f"ratio net change (count) / regenerative: {count_s / full_s:8.4f}")
    if not same:
        raise SystemExit("net change differs from the regenerative run")


if __name__ == "__main__":
    main()
