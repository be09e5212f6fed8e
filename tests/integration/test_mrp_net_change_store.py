"""A net-change MRP run stores only the rows of the items it re-planned, on SQLite and PostgreSQL:
after a regenerative run and net changes (PLC count postings, sales order changes, a purchase
order sent), the stored result - as the REST readers return it, and row by row - is exactly what
a fresh regenerative run stores from the same data.

The plant, by hand, is small but has what a partial store can get wrong: four BOM levels (FG ->
SA-1 -> SA-2 -> RM), components shared by several parents (SA-1, SA-2, RM-1, RM-3), every lot
rule, safety stock, two lines each running a work order. FG-A is made in fixed lots of 5000: a
small new order of FG-A fits in the excess of a planned lot, so the lot's quantity and with it
its components' requirements stand, but the lot is now pegged to the new order as well - the
components are not re-planned, yet their requirements serve one more sales line (the demand
sources below a re-planned item must be traced anew).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from taktline_cloud.historian.samples import Sample
from taktline_cloud.purchasing.suppliers import Supplier, SupplierItem
from taktline_cloud.purchasing_service import PurchasingService, RequisitionInput
from taktline_cloud.sales.orders import NewLine
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database
from taktline_contract.metrics import GOOD_COUNT
from tests.support import Clock

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
OUTPUT = {"LINE-1": "M1-2", "LINE-2": "M2-2"}  # each line's last machine counts its output


def _item(sku: str, kind: str, **planning: Any) -> dict[str, Any]:
    return {"sku": sku, "name": sku, "kind": kind, "uom": "pcs", "planning": planning}


def _lot(rule: str, **values: Any) -> dict[str, Any]:
    return {"rule": rule, **values}


PLANT: dict[str, Any] = {
    "organisation": {
        "group": {"code": "TL-GROUP", "name": "Group"},
        "company": {"code": "TL-CO", "name": "Company"},
        "plant": {"code": "PLANT-1", "name": "Plant"},
        "area": {"code": "ASSY", "name": "Assembly"},
    },
    "lines": [
        {
            "code": line,
            "name": line,
            "gateway": f"GW-{n}",
            "machines": [{"code": f"M{n}-1", "name": "Press"}, {"code": machine, "name": "Pack"}],
            "work_centre": {"code": f"WC-{n}", "standard_rate_per_hour": "2160"},
        }
        for n, (line, machine) in enumerate(OUTPUT.items(), start=1)
    ],
    "items": [
        _item("FG-A", "finished", lead_time_days=1, lot_size=_lot("fixed", quantity="5000")),
        _item("FG-B", "finished", lead_time_days=2, safety_stock="100"),
        _item(
            "SA-1",
            "semi_finished",
            lead_time_days=1,
            lot_size=_lot("min-multiple", minimum="1000", multiple="500"),
        ),
        _item(
            "SA-2", "semi_finished", lead_time_days=2, lot_size=_lot("periods-of-supply", periods=3)
        ),
        _item("RM-1", "raw", lead_time_days=3, safety_stock="2000"),
        _item("RM-2", "raw", lead_time_days=5, lot_size=_lot("fixed", quantity="4000")),
        _item(
            "RM-3",
            "raw",
            lead_time_days=2,
            safety_stock="500",
            lot_size=_lot("min-multiple", minimum="5000", multiple="1000"),
        ),
        _item("RM-4", "raw", lead_time_days=4, lot_size=_lot("periods-of-supply", periods=2)),
    ],
    "boms": {
        "FG-A": [{"component": "SA-1", "quantity": "1"}, {"component": "RM-1", "quantity": "2"}],
        "FG-B": [
            {"component": "SA-1", "quantity": "1"},
            {"component": "SA-2", "quantity": "1"},
            {"component": "RM-2", "quantity": "1", "scrap": "0.02"},
        ],
        "SA-1": [{"component": "SA-2", "quantity": "1"}, {"component": "RM-3", "quantity": "4"}],
        "SA-2": [{"component": "RM-1", "quantity": "1"}, {"component": "RM-4", "quantity": "2"}],
    },
    "locations": [
        {"code": "WH1/RAW", "name": "Raw", "kind": "internal"},
        {"code": "WH1/FG", "name": "Finished", "kind": "internal"},
        {"code": "VIRTUAL/PRODUCTION", "name": "Production", "kind": "production"},
        {"code": "VIRTUAL/SUPPLIER", "name": "Suppliers", "kind": "supplier"},
        {"code": "VIRTUAL/CUSTOMER", "name": "Customers", "kind": "customer"},
        {"code": "VIRTUAL/INVENTORY", "name": "Inventory adjustment", "kind": "inventory"},
    ],
    "production": {"component_location": "WH1/RAW", "finished_location": "WH1/FG"},
    "opening_stock": [
        {"item": sku, "location": where, "quantity": quantity, "unit_cost": "1.00"}
        for sku, where, quantity in (
            ("FG-A", "WH1/FG", "200"),
            ("SA-1", "WH1/RAW", "3000"),
            ("SA-2", "WH1/RAW", "1500"),
            ("RM-1", "WH1/RAW", "9000"),
            ("RM-2", "WH1/RAW", "2500"),
            ("RM-3", "WH1/RAW", "14000"),
            ("RM-4", "WH1/RAW", "6000"),
        )
    ],
    "customers": [{"code": "CUST-1", "name": "Customer 1"}],
    "sales_orders": [
        {
            "number": "SO-1",
            "customer": "CUST-1",
            "lines": [
                {"line": 1, "item": "FG-A", "quantity": "3000", "requested_in_days": 3},
                {"line": 2, "item": "FG-B", "quantity": "1200", "requested_in_days": 2},
            ],
        },
        {
            "number": "SO-2",
            "customer": "CUST-1",
            "lines": [
                {"line": 1, "item": "FG-A", "quantity": "4000", "requested_in_days": 9},
                {"line": 2, "item": "FG-B", "quantity": "2500", "requested_in_days": 6},
            ],
        },
    ],
    "work_orders": [
        {"number": "WO-1", "item": "FG-A", "quantity": "2000", "line": "LINE-1"},
        {"number": "WO-2", "item": "FG-B", "quantity": "1500", "line": "LINE-2"},
    ],
    "planning": {"bucket": "day", "horizon_days": 21},
}

TABLES = {
    "mrp_planned_orders": "id, item, source, quantity, due_bucket, release_bucket, due_date,"
    " release_date",
    "mrp_pegs": "item, position, supply, demand, quantity",
    "mrp_exceptions": "item, position, kind, order_ref, bucket, bucket_date, to_bucket, to_date,"
    " quantity",
    "mrp_demand_sources": "item, demand, source_item, source_demand, source_kind",
}


class Plant:
    """The plant service, purchasing wired to its net-change hook, and the lines' counters."""

    def __init__(self, db: Database, tmp_path: Path) -> None:
        self.db = db
        self.clock = Clock(T0)
        self.service = PlantService(db, clock=self.clock)
        path = tmp_path / "plant.yaml"
        path.write_text(yaml.safe_dump(PLANT, sort_keys=False), encoding="utf-8")
        self.service.load_master_data(path)
        self.purchasing = PurchasingService(
            db, clock=self.clock, on_items_changed=self._supply_changed
        )
        self.purchasing.upsert_supplier(Supplier("SUP-1", "Supplier 1", 3))
        self.purchasing.upsert_supplier_item(SupplierItem("SUP-1", "RM-2", Decimal("1.10")))
        self.counters = dict.fromkeys(OUTPUT.values(), Decimal(0))
        self.service.record_samples(
            [Sample(m, GOOD_COUNT, T0, value) for m, value in self.counters.items()]
        )
        for wo in ("WO-1", "WO-2"):
            self.service.release_work_order(wo)
            self.service.start_work_order(wo)

    def _supply_changed(self, items: frozenset[str]) -> None:
        self.service.mrp_supply_changed(items)

    def tick(self) -> None:
        self.clock.now += timedelta(seconds=30)

    def post(self, line: str, parts: int) -> None:
        """`parts` more made on `line`: its output counter sampled (a posting and a net change)."""
        self.tick()
        machine = OUTPUT[line]
        self.counters[machine] += parts
        self.service.record_samples(
            [Sample(machine, GOOD_COUNT, self.clock.now, self.counters[machine])]
        )


def stored(plant: Plant) -> dict[str, Any]:
    """The latest result as the readers return it (every supply's pegging), and every row of
    the result tables but the run that wrote it."""
    service = plant.service
    with plant.db.transaction(write=False) as tx:
        supplies = tx.executor.query("SELECT DISTINCT supply, item FROM mrp_pegs")
        rows = {
            table: sorted(
                tuple(str(value) for value in row)
                for row in tx.executor.query(f"SELECT {columns} FROM {table}")
            )
            for table, columns in TABLES.items()
        }
    pegging = {}
    for supply, item in sorted(supplies):
        shown = service.mrp_pegging(supply, item).to_json()
        del shown["run"]
        pegging[(supply, item)] = shown
    return {
        "planned orders": [row.to_json() for row in service.mrp_planned_orders()],
        "exceptions": [row.to_json() for row in service.mrp_exceptions()],
        "pegging": pegging,
        "rows": rows,
    }


def counts(plant: Plant) -> tuple[int, ...]:
    run = plant.service.mrp_latest_run()
    return (run.items, run.planned_orders, run.pegs, run.exceptions, run.beyond_horizon)


def assert_as_regenerated(plant: Plant, net_changes: int, first: int) -> None:
    """The last `net_changes` runs (ids from `first`) were net changes of fewer items than the
    plant's, and what they left stored is what a regenerative run stores now."""
    latest = plant.service.mrp_latest_run()
    assert latest.id == first + net_changes - 1
    runs = [plant.service.mrp_run(first + n) for n in range(net_changes)]
    assert [run.kind for run in runs] == ["net-change"] * net_changes
    assert all(0 < run.items_planned < run.items for run in runs)
    after_net_change, summary = stored(plant), counts(plant)
    run, _ = plant.service.run_mrp()
    assert run.kind == "regenerative"
    regenerated = stored(plant)
    for part in ("planned orders", "exceptions", "pegging", "rows"):
        assert after_net_change[part] == regenerated[part], part
    assert summary == counts(plant)


@pytest.fixture
def plant(db: Database, tmp_path: Path) -> Plant:
    return Plant(db, tmp_path)


def test_net_changes_store_what_a_regenerative_run_stores(plant: Plant) -> None:
    service = plant.service
    plant.post("LINE-1", 0)  # the first minute's output: measured rates from here on
    plant.clock.now += timedelta(minutes=1)
    plant.post("LINE-1", 600)
    plant.post("LINE-2", 500)
    run, _ = service.run_mrp()
    before = stored(plant)
    assert before["planned orders"]
    assert before["exceptions"]
    assert before["rows"]["mrp_demand_sources"]

    # A small order of FG-A in the excess of its planned lot: FG-A re-planned, its lot pegged to
    # the new order too; SA-1 and RM-1 (the lot's components) keep their requirements.
    plant.tick()
    order, _ = service.create_sales_order(
        "CUST-1", [NewLine("FG-A", Decimal(50), T0.date() + timedelta(days=10))]
    )
    sources = stored(plant)["rows"]["mrp_demand_sources"]
    assert [row for row in sources if row[0] == "SA-1" and row[3] == f"{order.number}/1"]
    assert sources != before["rows"]["mrp_demand_sources"]
    plant.post("LINE-1", 25)
    plant.post("LINE-2", 40)
    assert_as_regenerated(plant, 3, run.id + 1)

    # Sales order changes (quantity, date, cancelled), a purchase order sent, more counts.
    latest = service.mrp_latest_run().id
    plant.tick()
    service.change_sales_line("SO-1", 2, quantity=Decimal(2600))
    plant.tick()
    service.change_sales_line("SO-2", 1, requested=T0.date() + timedelta(days=4))
    plant.tick()
    service.cancel_sales_line("SO-2", 2)
    plant.tick()
    (po,) = plant.purchasing.draft(
        [RequisitionInput("RM-2", Decimal(3000), T0.date() + timedelta(days=8))]
    )
    plant.purchasing.send(po.number)
    plant.post("LINE-2", 30)
    plant.post("LINE-1", 10)
    assert_as_regenerated(plant, 6, latest + 1)
