"""Open purchase orders and created work orders are MRP supply, on SQLite and PostgreSQL: an
approved planned order is not suggested again by the next run, the document it became is pegged
under its own number, and cancelling the purchase order brings the suggestion back.

The demo plant's plan at T0 without its seeded work order (see test_mrp_runs.py): PLN/FG-100/2
make 480 due 11-25 for SO-1001/1, PLN/RM-SCREW-M6/1 buy 10000 due 11-24 (25000 on hand less
4 x 480 for the FG order is 920 short of the 24000 safety stock).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from taktline_cloud.planning_approve import approve
from taktline_cloud.purchasing.suppliers import Supplier, SupplierItem
from taktline_cloud.purchasing_service import PurchasingService
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
TODAY = date(2026, 11, 24)
BUY, MAKE = "PLN/RM-SCREW-M6/1", "PLN/FG-100/2"
SALES = ("FG-100", "SO-1001/1", "sales")


def _plant(db: Database, path: Path) -> PlantService:
    service = PlantService(db, clock=lambda: T0)
    service.load_master_data(path)
    return service


@pytest.fixture
def plant(db: Database, tmp_path: Path) -> PlantService:
    """The demo plant without its seeded work order WO-1001."""
    raw = yaml.safe_load(PLANT.read_text(encoding="utf-8"))
    raw.pop("work_orders", None)
    demo = tmp_path / "demo.yaml"
    demo.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return _plant(db, demo)


@pytest.fixture
def purchasing(db: Database) -> PurchasingService:
    service = PurchasingService(db, clock=lambda: T0)
    service.upsert_supplier(Supplier("ACME", "Acme Fasteners", 3, "EUR", Decimal(0)))
    service.upsert_supplier_item(
        SupplierItem("ACME", "RM-SCREW-M6", Decimal("0.04"), Decimal(0), Decimal(0), None, False)
    )
    return service


def planned(plant: PlantService, item: str) -> list[tuple[str, str, date]]:
    return [(o.id, str(o.quantity), o.due_date) for o in plant.mrp_planned_orders(item=item)]


def pegs(plant: PlantService, supply: str) -> list[tuple[Any, ...]]:
    return [
        (p.demand, str(p.quantity), [(s.item, s.demand, s.kind) for s in p.serves])
        for p in plant.mrp_pegging(supply).pegs
    ]


def test_approved_orders_are_supply_and_a_cancelled_po_is_not(
    plant: PlantService, purchasing: PurchasingService
) -> None:
    plant.run_mrp()
    assert planned(plant, "RM-SCREW-M6") == [(BUY, "10000", TODAY)]
    po, _ = approve(plant, purchasing, BUY)
    assert str(purchasing.order(po.number).order.status) == "draft"
    receipt = f"{po.number}/1"

    plant.run_mrp()
    assert planned(plant, "RM-SCREW-M6") == []  # the draft PO covers the same need
    assert planned(plant, "FG-100") == [(MAKE, "480", date(2026, 11, 25))]
    pegging = plant.mrp_pegging(receipt)
    assert (pegging.item, pegging.supply) == ("RM-SCREW-M6", receipt)
    # On hand serves the FG order's 1920 screws; the PO restores the safety stock.
    assert pegs(plant, receipt) == [
        ("safety-stock", "920", [("RM-SCREW-M6", "safety-stock", "safety-stock")])
    ]

    purchasing.cancel(po.number)
    plant.run_mrp()
    assert planned(plant, "RM-SCREW-M6") == [(BUY, "10000", TODAY)]

    wo, _ = approve(plant, purchasing, MAKE)
    plant.run_mrp()
    assert planned(plant, "FG-100") == []  # the created work order covers the sales order
    assert pegs(plant, wo.number) == [("SO-1001/1", "480", [SALES])]


def test_the_demo_plants_created_work_order_is_supply(db: Database) -> None:
    plant = _plant(db, PLANT)
    assert [(w.number, w.status) for w in plant.work_orders()] == [("WO-1001", "created")]
    plant.run_mrp()
    # 1000 at LINE-1's standard 2160/h from now is due today; the sales order needs 480 more.
    assert planned(plant, "FG-100") == []
    assert pegs(plant, "WO-1001") == [("SO-1001/1", "480", [SALES])]
    assert [(m.kind, m.order) for m in plant.mrp_exceptions() if m.item == "FG-100"] == [
        ("defer", "WO-1001")
    ]
