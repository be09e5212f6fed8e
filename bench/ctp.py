"""Capable-to-promise of a 50-line sales order against a plant of realistic size.

Issue 5 asks capable-to-promise for a 50-line order with a p95 under 200 ms on this 2-core
machine. This builds a seeded plant - 200 items (150 finished, 50 sub-assemblies) made on
10 lines (one or two lines each, measured rates with a standard-rate fallback, two- or
three-shift calendars with holidays on the plant's wall clock (Asia/Shanghai), 2-5 work orders
queued per line), BOMs of 3-6 purchased
components out of 500 plus, for half the finished items, a sub-assembly of 2-4 components
(two levels), the
components' stock, 1 000 open purchase orders at confirmed dates and purchase lead times (a
tenth of the components have none) - and times, over `--runs` runs:

* `sales.ctp.promise_order` for one 50-line order: the plant indexed, then every line promised
  in line order (stock, components, line queue, calendar);
* baseline, same run and same lines: the existing available-to-promise rule
  (`sales.promise.promise_lines`, stock then running work orders at their rate) per item of
  the order, with the work orders queued on the item's lines as its supplies.

    uv run python bench/ctp.py [--runs 100] [--lines 50] [--seed 5]

Stops by itself (a few seconds).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from decimal import Decimal
from zoneinfo import ZoneInfo

from taktline_cloud.planning.bom import BomLine
from taktline_cloud.sales.ctp import (
    ComponentSupply,
    CtpKind,
    CtpPromise,
    FinishedStock,
    OrderLine,
    Plant,
    PurchaseOrder,
    QueuedWork,
    Route,
    WorkingCalendar,
    promise_order,
)
from taktline_cloud.sales.promise import Demand, Supply, promise_lines

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
ITEMS = 200
SEMI_FINISHED = 50  # of the items: sub-assemblies in the finished items' BOMs
LINES = 10
COMPONENTS = 500
PURCHASE_ORDERS = 1_000
ZONE = ZoneInfo("Asia/Shanghai")  # shifts and holidays on the plant's wall clock
HOLIDAYS = (date(2026, 12, 24), date(2026, 12, 25), date(2026, 12, 31), date(2027, 1, 1))


def build(seed: int) -> Plant:
    """A seeded plant of the size in the module docstring."""
    rng = random.Random(seed)
    two = [(clock(6), clock(14)), (clock(14), clock(22))]
    three = [*two, (clock(22), clock(6))]
    calendars = {
        f"L{n}": WorkingCalendar.weekly(
            dict.fromkeys(range(5 if n % 2 else 6), three if n % 3 == 0 else two),
            HOLIDAYS,
            ZONE,
        )
        for n in range(1, LINES + 1)
    }
    lines = sorted(calendars)
    semi = [f"SF-{n:02d}" for n in range(SEMI_FINISHED)]
    items = [f"FG-{n:03d}" for n in range(ITEMS - SEMI_FINISHED)] + semi
    components = [f"RM-{n:03d}" for n in range(COMPONENTS)]
    routes: list[Route] = []
    bom: list[BomLine] = []
    for item in items:
        for line in rng.sample(lines, rng.choice((1, 1, 2))):
            standard = Decimal(rng.randrange(60, 400, 10))
            measured = (
                None if rng.random() < 0.1 else standard * Decimal(rng.randint(60, 105)) / 100
            )
            routes.append(Route(item, line, measured, standard))
        parts = rng.sample(components, rng.randint(2, 4) if item in semi else rng.randint(3, 6))
        if item not in semi and rng.random() < 0.5:
            parts.append(rng.choice(semi))  # a two-level BOM: a sub-assembly made in house
        for component in parts:
            scrap = Decimal(rng.choice(("0", "0", "0.02", "0.05")))
            bom.append(BomLine(item, component, Decimal(rng.choice((1, 1, 2, 4))), scrap))
    made_on: dict[str, list[str]] = {}
    for route in routes:
        made_on.setdefault(route.line, []).append(route.item)
    queue = [
        QueuedWork(f"WO-{line}-{n}", line, rng.choice(made_on[line]), Decimal(rng.randint(50, 800)))
        for line in lines
        if line in made_on
        for n in range(rng.randint(2, 5))
    ]
    stock = [
        FinishedStock(item, Decimal(on_hand), Decimal(rng.randint(0, on_hand)))
        for item in items
        for on_hand in [rng.choice((0, 0, 50, 200, 500))]
    ]
    supplies = [
        ComponentSupply(
            component,
            Decimal(rng.choice((0, 500, 2000, 5000))),
            None if rng.random() < 0.1 else timedelta(days=rng.randint(3, 30)),
        )
        for component in components
    ]
    orders = [
        PurchaseOrder(
            f"PO-{n}",
            rng.choice(components),
            Decimal(rng.randint(1, 40) * 50),
            NOW + timedelta(hours=rng.randint(-48, 60 * 24)),
        )
        for n in range(PURCHASE_ORDERS)
    ]
    return Plant(calendars, routes, queue, stock, bom, supplies, orders)


def order(seed: int, lines: int) -> list[OrderLine]:
    """A seeded sales order over distinct-or-repeated finished items."""
    rng = random.Random(seed + 1)
    return [
        OrderLine(
            n,
            f"FG-{rng.randrange(ITEMS - SEMI_FINISHED):03d}",
            Decimal(rng.randint(1, 50) * 10),
            NOW.date() + timedelta(days=rng.randint(2, 30)),
        )
        for n in range(1, lines + 1)
    ]


def atp(plant: Plant, lines: list[OrderLine]) -> int:
    """The existing ATP rule over the same lines: stock, then the item's queued work orders."""
    rates = {(r.item, r.line): r.rate for r in plant.routes}
    stock = {s.item: s.available for s in plant.stock}
    by_item: dict[str, list[Demand]] = {}
    for line in lines:
        by_item.setdefault(line.item, []).append(
            Demand("SO-1", line.line, line.quantity, line.requested_date)
        )
    promised = 0
    for item, demands in by_item.items():
        supplies = [
            Supply(w.work_order, w.line, w.remaining, Decimal(0), *rates[(item, w.line)])
            for w in plant.queue
            if w.item == item
        ]
        promised += len(promise_lines(demands, stock.get(item, Decimal(0)), supplies, NOW))
    return promised


def timings_ms(runs: int, call: Callable[[], object]) -> tuple[list[float], object]:
    """Wall times of `runs` calls in ms, with the last call's result."""
    times: list[float] = []
    result: object = None
    for _ in range(runs):
        began = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - began) * 1000)
    return times, result


def p95(times: list[float]) -> float:
    """The 95th percentile (inclusive method; the one time of a single run)."""
    if len(times) < 2:
        return times[0]
    return statistics.quantiles(times, n=20, method="inclusive")[18]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--lines", type=int, default=50)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    print(
        f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    plant = build(args.seed)
    lines = order(args.seed, args.lines)
    print(
        f"plant: {ITEMS} items, {len(plant.calendars)} lines, {len(plant.routes)} routes,"
        f" {len(plant.queue)} queued work orders, {len(plant.bom)} BOM lines,"
        f" {len(plant.components)} components, {len(plant.purchase_orders)} open POs;"
        f" order: {len(lines)} lines"
    )
    base, _ = timings_ms(args.runs, lambda: atp(plant, lines))
    ctp, result = timings_ms(args.runs, lambda: promise_order("SO-1", lines, plant, NOW))
    assert isinstance(result, list)
    promises: list[CtpPromise] = result
    kinds = Counter(str(p.kind) for p in promises)
    late = max((p.promised_at for p in promises if p.promised_at), default=NOW)
    print(
        f"promises: {dict(sorted(kinds.items()))}, {sum(p.at_risk for p in promises)} at risk,"
        f" latest {late:%Y-%m-%d %H:%M}"
    )
    longest = max((p for p in promises if p.kind is not CtpKind.STOCK), key=lambda p: len(p.steps))
    print(f"longest reason: {longest.reason}")
    print(
        f"CTP 50-line order: median {statistics.median(ctp):.1f} ms, p95 {p95(ctp):.1f} ms,"
        f" max {max(ctp):.1f} ms over {args.runs} runs (goal p95 < 200 ms)"
    )
    print(
        f"baseline ATP rule, same lines: median {statistics.median(base):.2f} ms,"
        f" p95 {p95(base):.2f} ms"
    )
    print(f"ratio CTP / ATP baseline: p95 {p95(ctp) / p95(base):.1f}")


if __name__ == "__main__":
    main()
