"""One count posting end to end in the cloud core: backflush, net-change MRP and re-promise.

Issue 5 asks net-change MRP plus re-promise after one count posting in under 100 ms on this
2-core machine. This loads a seeded plant - the demo plant's structure scaled up: 1 100 items
(100 finished, 200 + 100 sub-assemblies on two levels, 700 purchased components; four BOM
levels), 10 lines of 3 machines each with a running work order, opening stock, 300 open
purchase order lines sent to 5 suppliers, 100 sales orders of 3 lines (most of them beyond
finished stock, so capable-to-promise answers them) - into the real `PlantService` on SQLite
or PostgreSQL, runs a regenerative MRP, and then times `--postings` calls of:

* posting: `PlantService.record_samples` with one good-count sample that advances one line's
  running work order - the sample stored, the counts posted (backflush of its components,
  receipt of the product, reservations drawn), the work order's rate, every open sales line
  re-promised (the stock/work-order rule, then capable-to-promise for the lines it leaves
  short) and the net-change MRP of the items the posting touched - to the returned events;
* baselines, same run and same service: `record_samples` with one temperature sample of the
  same machine (the same transaction, sample insert and machine row, nothing posted: the
  path's fixed cost), and every fifth posting a regenerative `PlantService.run_mrp` of the
  same data (what the net change is there to avoid).

Each posting's parts are also timed alone, same data: `PlantService.repromise()` (every open
line re-promised, nothing posted) and the net-change MRP of one work order's items.

    uv run python bench/repromise.py [--backend sqlite|postgresql] [--postings 50] [--seed 5]
        [--profile FILE]   # a cProfile of the postings too (top functions printed, stats
                           # saved); their times then include the profiler's overhead

Stops by itself (about a minute on this machine, most of it loading the plant).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import platform
import pstats
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import yaml

from taktline_cloud.historian.samples import Sample
from taktline_cloud.planning_runs import NET_CHANGE, REGENERATIVE
from taktline_cloud.purchasing.suppliers import Supplier, SupplierItem
from taktline_cloud.purchasing_service import PurchasingService, RequisitionInput
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database
from taktline_contract.metrics import GOOD_COUNT, TEMPERATURE

ADMIN_DSN = os.environ.get("TAKTLINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
FINISHED = 100
SUB_1 = 200  # sub-assemblies in finished items' BOMs
SUB_2 = 100  # sub-assemblies in the first level's BOMs
RAW = 700
LINES = 10
MACHINES = 3  # per line; the last one's good counter is the line's output
SUPPLIERS = 5
PURCHASE_ORDERS = 300
ORDERS = 100
LINES_PER_ORDER = 3
PARTS_PER_POSTING = 5
GOAL_MS = 100.0


class Clock:
    """The services' clock, moved by the benchmark (one day: MRP's buckets stay the same)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def plant_file(seed: int) -> dict[str, Any]:
    """The demo plant's master data, scaled up (see the module docstring)."""
    rng = random.Random(seed)
    finished = [f"FG-{n:04d}" for n in range(FINISHED)]
    sub_1 = [f"SA1-{n:04d}" for n in range(SUB_1)]
    sub_2 = [f"SA2-{n:04d}" for n in range(SUB_2)]
    raw = [f"RM-{n:04d}" for n in range(RAW)]
    lot_sizes: list[dict[str, Any]] = [
        {"rule": "lot-for-lot"},
        {"rule": "fixed", "quantity": "2000"},
        {"rule": "min-multiple", "minimum": "1000", "multiple": "500"},
        {"rule": "periods-of-supply", "periods": 3},
    ]

    def item(sku: str, kind: str, source: str) -> dict[str, Any]:
        planning: dict[str, Any] = {
            "lead_time_days": rng.randint(1, 7),
            "source": source,
            "lot_size": rng.choice(lot_sizes),
        }
        if rng.random() < 0.3:
            planning["safety_stock"] = str(rng.choice((100, 500, 2000)))
        return {
            "sku": sku,
            "name": f"{kind} {sku}",
            "kind": kind,
            "uom": "pcs",
            "planning": planning,
        }

    items = (
        [item(s, "finished", "make") for s in finished]
        + [item(s, "semi_finished", "make") for s in sub_1 + sub_2]
        + [item(s, "raw", "buy") for s in raw]
    )

    def components(below: list[str], count: int) -> list[dict[str, str]]:
        chosen = rng.sample(below, count)
        return [
            {"component": c, "quantity": str(rng.choice((1, 1, 2, 4))), "scrap": "0.02"}
            if rng.random() < 0.2
            else {"component": c, "quantity": str(rng.choice((1, 1, 2, 4)))}
            for c in chosen
        ]

    boms: dict[str, list[dict[str, str]]] = {}
    for sku in finished:
        boms[sku] = components(sub_1, rng.randint(1, 2)) + components(raw, rng.randint(2, 4))
    for sku in sub_1:
        boms[sku] = components(sub_2, 1) + components(raw, rng.randint(2, 4))
    for sku in sub_2:
        boms[sku] = components(raw, rng.randint(2, 4))

    lines = [
        {
            "code": f"LINE-{n:02d}",
            "name": f"Assembly line {n}",
            "gateway": f"GW-{n:02d}",
            "machines": [
                {"code": f"M{n:02d}-{m}", "name": f"Machine {m}"} for m in range(1, MACHINES + 1)
            ],
            "work_centre": {"code": f"WC-{n:02d}", "standard_rate_per_hour": "2160"},
        }
        for n in range(1, LINES + 1)
    ]
    stocked = [
        (sku, "WH1/RAW", rng.choice((0, 2000, 20000, 200000))) for sku in raw + sub_1 + sub_2
    ] + [(sku, "WH1/FG", rng.choice((0, 0, 50, 500))) for sku in finished]
    stock = [
        {"item": sku, "location": where, "quantity": str(quantity), "unit_cost": "1.25"}
        for sku, where, quantity in stocked
        if quantity
    ]
    running = rng.sample(finished, LINES)
    work_orders = [
        {"number": f"WO-{1001 + n}", "item": sku, "quantity": "100000", "line": f"LINE-{n + 1:02d}"}
        for n, sku in enumerate(running)
    ]
    sales_orders = [
        {
            "number": f"SO-{2001 + n}",
            "customer": f"CUST-{n % 20:02d}",
            "lines": [
                {
                    "line": line,
                    "item": rng.choice(finished),
                    "quantity": str(rng.choice((100, 500, 2000, 10000))),
                    "requested_in_days": rng.randint(1, 21),
                }
                for line in range(1, LINES_PER_ORDER + 1)
            ],
        }
        for n in range(ORDERS)
    ]
    return {
        "organisation": {
            "group": {"code": "TL-GROUP", "name": "Taktline Bench Group"},
            "company": {"code": "TL-CO", "name": "Taktline Bench Co."},
            "plant": {"code": "PLANT-1", "name": "Bench plant"},
            "area": {"code": "ASSY", "name": "Assembly"},
        },
        "lines": lines,
        "items": items,
        "boms": boms,
        "locations": [
            {"code": "WH1/RAW", "name": "Raw material store", "kind": "internal"},
            {"code": "WH1/FG", "name": "Finished goods store", "kind": "internal"},
            {"code": "VIRTUAL/PRODUCTION", "name": "Production", "kind": "production"},
            {"code": "VIRTUAL/SUPPLIER", "name": "Suppliers", "kind": "supplier"},
            {"code": "VIRTUAL/CUSTOMER", "name": "Customers", "kind": "customer"},
            {"code": "VIRTUAL/INVENTORY", "name": "Inventory adjustment", "kind": "inventory"},
        ],
        "production": {"component_location": "WH1/RAW", "finished_location": "WH1/FG"},
        "opening_stock": stock,
        "customers": [{"code": f"CUST-{n:02d}", "name": f"Customer {n}"} for n in range(20)],
        "sales_orders": sales_orders,
        "work_orders": work_orders,
        "planning": {"bucket": "day", "horizon_days": 28},
    }


@contextlib.contextmanager
def database_url(backend: str) -> Iterator[str]:
    """A fresh, empty database of the backend; removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'bench.db'}"
        return
    name = f"taktline_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def open_purchase_orders(purchasing: PurchasingService, raw: list[str], seed: int) -> int:
    """Suppliers for every component, and `PURCHASE_ORDERS` requisitions drafted and sent."""
    rng = random.Random(seed + 1)
    for n in range(SUPPLIERS):
        purchasing.upsert_supplier(Supplier(f"SUP-{n}", f"Supplier {n}", rng.randint(2, 10)))
    for index, sku in enumerate(raw):
        offer = SupplierItem(f"SUP-{index % SUPPLIERS}", sku, Decimal("1.10"))
        purchasing.upsert_supplier_item(offer)
    wanted = [
        RequisitionInput(
            sku,
            Decimal(rng.choice((1000, 5000, 20000))),
            T0.date() + timedelta(days=rng.randint(2, 25)),
        )
        for sku in rng.sample(raw, PURCHASE_ORDERS)
    ]
    orders = purchasing.draft(wanted, window_days=7)
    for order in orders:
        purchasing.send(order.number)
    return len(orders)


def timings_ms(times: list[float]) -> str:
    return (
        f"p50 {statistics.median(times):6.1f} ms, p95 {p95(times):6.1f} ms,"
        f" max {max(times):6.1f} ms"
    )


def p95(times: list[float]) -> float:
    """The 95th percentile (inclusive method; the one time of a single run)."""
    if len(times) < 2:
        return times[0]
    return statistics.quantiles(times, n=20, method="inclusive")[18]


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = call()
    return (time.perf_counter() - began) * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--postings", type=int, default=50)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--profile", type=Path, help="also profile the postings, stats here")
    args = parser.parse_args()
    print(
        f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC,"
        f" backend {args.backend}, load average {os.getloadavg()[0]:.1f}"
    )
    data = plant_file(args.seed)
    with tempfile.TemporaryDirectory() as folder, database_url(args.backend) as url:
        path = Path(folder) / "plant.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        with Database(url) as db:
            run(db, path, data, args)


def run(db: Database, path: Path, data: dict[str, Any], args: argparse.Namespace) -> None:
    clock = Clock()
    service = PlantService(db, clock=clock, capable_to_promise=True)
    purchasing = PurchasingService(db, clock=clock, on_supply_changed=None)
    began = time.perf_counter()
    service.load_master_data(path)
    raw = [i["sku"] for i in data["items"] if i["kind"] == "raw"]
    orders = open_purchase_orders(purchasing, raw, args.seed)
    outputs = {line["code"]: line["machines"][-1]["code"] for line in data["lines"]}
    counters = dict.fromkeys(outputs.values(), Decimal(0))
    # The counters' first readings, then every work order started, then a minute of output
    # on every line: the rates are measured (not the standard rate) from here on.
    service.record_samples(
        [Sample(m, GOOD_COUNT, T0 - timedelta(seconds=1), v) for m, v in counters.items()]
    )
    for wo in data["work_orders"]:
        service.release_work_order(wo["number"])
        service.start_work_order(wo["number"])
    clock.now = T0 + timedelta(minutes=1)
    for machine in counters:
        counters[machine] += 600
    service.record_samples([Sample(m, GOOD_COUNT, clock.now, v) for m, v in counters.items()])
    service.repromise()
    full_ms, mrp = timed(service.run_mrp)
    run_row = mrp[0]
    assert run_row.kind == REGENERATIVE
    lines = service.sales_orders()
    ctp_lines = sum(1 for row in lines if (row.promise_reason or "").startswith("SO-"))
    print(
        f"plant: {len(data['items'])} items, {sum(len(b) for b in data['boms'].values())} BOM"
        f" lines (4 levels), {LINES} lines x {MACHINES} machines, {LINES} running work orders,"
        f" {orders} POs of {PURCHASE_ORDERS} lines sent, {len(lines)} open sales lines"
        f" ({ctp_lines} promised by capable-to-promise, {len(lines) - ctp_lines} by the rule);"
        f" loaded in {time.perf_counter() - began:.1f} s"
    )
    print(
        f"regenerative MRP in place: run {run_row.id}, {full_ms:.0f} ms;"
        f" {sum(row.at_risk for row in lines)} sales lines at risk"
    )

    posting: list[float] = []
    baseline: list[float] = []
    repromise: list[float] = []
    net_change: list[float] = []
    regenerative: list[float] = []
    promised = Counter[str]()
    machines = list(outputs.values())
    made_on = {outputs[wo["line"]]: wo["item"] for wo in data["work_orders"]}
    profile = cProfile.Profile() if args.profile else None
    for n in range(args.postings):
        machine = machines[n % len(machines)]
        clock.now += timedelta(seconds=1)
        sample = Sample(machine, TEMPERATURE, clock.now, Decimal("35.5") + n % 3)
        ms, events = timed(partial(service.record_samples, [sample]))
        baseline.append(ms)
        clock.now += timedelta(seconds=1)
        counters[machine] += PARTS_PER_POSTING
        sample = Sample(machine, GOOD_COUNT, clock.now, counters[machine])
        if profile is not None:
            profile.enable()
        ms, events = timed(partial(service.record_samples, [sample]))
        if profile is not None:
            profile.disable()
        posting.append(ms)
        types: Counter[str] = Counter(e.type for e in events)
        assert types["posting"] == 1, f"posting {n}: no count posted: {dict(types)}"
        latest = service.mrp_latest_run()
        assert latest.kind == NET_CHANGE, f"posting {n}: MRP run {latest.kind}, not net change"
        promised.update(e.type for e in events if e.type == "promise.changed")
        clock.now += timedelta(seconds=1)
        ms, _ = timed(service.repromise)
        repromise.append(ms)
        item = made_on[machine]
        ms, _ = timed(partial(service._mrp_net_change, [item]))  # its part alone
        net_change.append(ms)
        if n % 5 == 4 or n == args.postings - 1:
            # A regenerative run now and then, same data (the next posting nets against it).
            ms, _ = timed(service.run_mrp)
            regenerative.append(ms)

    print(
        f"{args.postings} postings of {PARTS_PER_POSTING} parts, one line after the other;"
        f" {promised['promise.changed']} promise.changed events in all"
    )
    print(
        f"posting -> events (backflush, MRP, re-promise): {timings_ms(posting)}"
        f"  (goal < {GOAL_MS:.0f})"
    )
    print(f"  of it, re-promise of every open line alone:   {timings_ms(repromise)}")
    print(f"  of it, net-change MRP of the posted items:    {timings_ms(net_change)}")
    print(f"baseline: one temperature sample, same path:    {timings_ms(baseline)}")
    print(f"baseline: a regenerative MRP run, same data:   {timings_ms(regenerative)}")
    for name, base in (("temperature sample", baseline), ("regenerative MRP", regenerative)):
        ratio = statistics.median(posting) / statistics.median(base)
        print(f"ratio posting / {name}: p50 {ratio:.1f}, p95 {p95(posting) / p95(base):.1f}")
    if profile is not None:
        profile.dump_stats(args.profile)
        stats = pstats.Stats(profile).sort_stats("cumulative")
        stats.print_stats(40)


if __name__ == "__main__":
    main()
