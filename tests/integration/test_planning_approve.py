"""Approving MRP planned orders on the demo plant, on SQLite and PostgreSQL: a buy order becomes a
draft purchase order (refused while no supplier sells the item), a make order a created work
order; approving twice answers the same document.

The demo plant's plan at T0 (see test_mrp_runs.py): PLN/FG-100/2 make 480 due 11-25 (bucket 2),
PLN/RM-SCREW-M6/1 buy 10000 due 11-24 (bucket 1, released past due): its needed date. As there,
the plant is loaded without plant.yaml's seeded work order (a created work order is supply).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from taktline_cloud.errors import Conflict, NotFound
from taktline_cloud.planning_approve import approve, requisition_key, work_order_number
from taktline_cloud.purchasing.suppliers import Supplier, SupplierItem
from taktline_cloud.purchasing_service import PurchasingService
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
BUY, MAKE = "PLN/RM-SCREW-M6/1", "PLN/FG-100/2"


@pytest.fixture
def plant(db: Database, tmp_path: Path) -> PlantService:
    raw = yaml.safe_load(PLANT.read_text(encoding="utf-8"))
    raw.pop("work_orders", None)
    demo = tmp_path / "demo.yaml"
    demo.write_text(yaml.safe_dump(raw), encoding="utf-8")
    service = PlantService(db, clock=lambda: T0)
    service.load_master_data(demo)
    return service


@pytest.fixture
def purchasing(db: Database) -> PurchasingService:
    return PurchasingService(db, clock=lambda: T0)


def _sell_screws(purchasing: PurchasingService) -> None:
    purchasing.upsert_supplier(Supplier("ACME", "Acme Fasteners", 3, "EUR", Decimal(0)))
    purchasing.upsert_supplier_item(
        SupplierItem("ACME", "RM-SCREW-M6", Decimal("0.04"), Decimal(0), Decimal(0), None, False)
    )


def test_no_run_or_unknown_order_is_not_found(
    plant: PlantService, purchasing: PurchasingService
) -> None:
    with pytest.raises(NotFound):
        approve(plant, purchasing, BUY)
    plant.run_mrp()
    with pytest.raises(NotFound, match="no planned order 'PLN/NOPE/1'"):
        approve(plant, purchasing, "PLN/NOPE/1")


def test_buy_order_becomes_one_draft_purchase_order(
    plant: PlantService, purchasing: PurchasingService
) -> None:
    run, _ = plant.run_mrp()
    with pytest.raises(Conflict, match="no supplier sells RM-SCREW-M6"):
        approve(plant, purchasing, BUY)
    assert purchasing.orders() == []

    _sell_screws(purchasing)
    first, events = approve(plant, purchasing, BUY)
    assert (first.document, first.created, first.run, events) == (
        "purchase_order",
        True,
        run.id,
        [],
    )
    (order,) = purchasing.orders()
    assert (order.number, order.supplier, str(order.status)) == (first.number, "ACME", "draft")
    (line,) = order.lines
    assert (line.item, line.quantity, line.needed) == (
        "RM-SCREW-M6",
        Decimal(10000),
        date(2026, 11, 24),
    )
    assert line.requisition == requisition_key(run.id, BUY)

    again, _ = approve(plant, purchasing, BUY)
    assert (again.number, again.created) == (first.number, False)
    assert len(purchasing.orders()) == 1


def test_make_order_becomes_one_created_work_order(
    plant: PlantService, purchasing: PurchasingService
) -> None:
    run, _ = plant.run_mrp()
    first, events = approve(plant, purchasing, MAKE)
    assert (first.document, first.created) == ("work_order", True)
    assert first.number == work_order_number(run.id, MAKE) == f"MRP{run.id}-PLN-FG-100-2"
    assert [e.type for e in events] == ["work_order.updated"]
    wo = plant.work_order(first.number)
    assert (wo.item, wo.line, wo.quantity, wo.status) == (
        "FG-100",
        "LINE-1",
        Decimal(480),
        "created",
    )

    again, events = approve(plant, purchasing, MAKE)
    assert (again.number, again.created, events) == (first.number, False, [])
    assert [w.number for w in plant.work_orders()].count(first.number) == 1
