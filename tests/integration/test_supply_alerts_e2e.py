"""Supply alerts end to end on the running cloud (app wiring, REST), on SQLite and PostgreSQL.

A sales order line far beyond stock -> a regenerative MRP run -> the gaskets' buy order, pegged
(through FG-100's planned order) to the sales line -> approved into a draft purchase order ->
sent -> the supplier (X-Taktline-Supplier) confirms it two days late, then short. Then:

* the net-change run the confirmation triggers pegs the order's scheduled receipt to the same
  sales line;
* GET /api/purchasing/alerts names the sales order line (SO number and line) in the late and
  in the short confirmation's alert;
* the sales line's promise moved two days later, its reason naming the purchase order.

The plan by hand (daily buckets from today): SO-1001/1 wants 10 000 FG-100 in 14 days, 120 in
stock -> FG-100's planned order of 9 880, released the day before; gaskets (no scrap in this
test's plant, lot-for-lot, no safety stock): 9 880 needed at that release, 6 000 on hand -> a
buy order of 3 880 due that day, all of it pegged to FG-100's order, which serves SO-1001/1.
When the supplier then confirms 3 000: 880 gaskets short = 880 pumps of the sales line.

Beside it, through the services: the approved order's line keeps the planned order's id and
pegs in the database (what the short confirmation is judged against).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from taktline_cloud.planning_approve import approve
from taktline_cloud.purchasing.requisitions import PeggedDemand
from taktline_cloud.purchasing.suppliers import Supplier, SupplierItem
from taktline_cloud.purchasing_service import PurchasingService
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database
from tests.integration.test_cloud_api import cloud_settings, running_cloud
from tests.support import Mosquitto

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
ACME = {"X-Taktline-Supplier": "ACME"}
SALES_LINE = "SO-1001/1"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


@pytest.fixture
def plant_file(tmp_path: Path) -> Path:
    """The demo plant with one large sales order line, no work orders, gaskets without scrap."""
    data = yaml.safe_load(PLANT.read_text(encoding="utf-8"))
    data["sales_orders"][0]["lines"] = [
        {"line": 1, "item": "FG-100", "quantity": "10000", "requested_in_days": 14}
    ]
    data["work_orders"] = []
    for line in data["boms"]["FG-100"]:
        line.pop("scrap", None)
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def ok(response: httpx.Response, code: int = 200) -> Any:
    assert response.status_code == code, response.text
    return response.json()


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def sales_of(pegging: dict[str, Any]) -> dict[str, str]:
    """The sales order lines a supply serves: demand -> the peg's quantity."""
    return {
        source["demand"]: peg["quantity"]
        for peg in pegging["pegs"]
        for source in peg["serves"]
        if source["kind"] == "sales"
    }


@pytest.mark.mosquitto
async def test_a_late_short_confirmation_names_the_customer_order_and_moves_its_promise(
    mosquitto: Mosquitto, tmp_path: Path, database_url: str, plant_file: Path
) -> None:
    settings = cloud_settings(
        tmp_path, mosquitto.port, database_url=database_url, plant_file=plant_file
    )
    async with running_cloud(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as api:
        supplier = {"code": "ACME", "name": "Acme Seals", "lead_days": 3}
        ok(await api.put("/api/suppliers/ACME", json=supplier))
        ok(
            await api.put(
                "/api/suppliers/ACME/items", json={"item": "RM-GASKET", "unit_price": "0.3"}
            )
        )

        # The run plans the gaskets' buy order, pegged to the sales line through FG-100.
        run = ok(await api.post("/api/mrp/runs"), 201)
        (planned,) = ok(
            await api.get("/api/mrp/planned-orders", params={"kind": "buy", "item": "RM-GASKET"})
        )
        assert planned["quantity"] == "3880"
        pegging = ok(await api.get("/api/mrp/pegging", params={"supply": planned["id"]}))
        assert sales_of(pegging) == {SALES_LINE: "3880"}

        # Approved: a draft order (its line keeps the planned order's pegs).
        approval = ok(await api.post(f"/api/mrp/planned-orders/{planned['id']}/approve"), 201)
        number = approval["number"]
        assert (approval["document"], approval["run"]) == ("purchase_order", run["id"])
        (line,) = ok(await api.get(f"/api/purchase-orders/{number}"))["lines"]
        needed = date.fromisoformat(line["needed"])
        assert (line["item"], line["quantity"], line["needed"]) == (
            "RM-GASKET",
            "3880",
            planned["due_date"],
        )

        ok(await api.post(f"/api/purchase-orders/{number}/send"))
        (sent,) = ok(await api.get("/api/sales-orders"))
        sent_promise = at(sent["promised_at"])
        assert number in sent["promise_reason"]

        # The supplier confirms two days late.
        late = needed + timedelta(days=2)
        answer = {"lines": [{"line": 1, "date": late.isoformat()}]}
        confirmed = await api.post(
            f"/api/purchase-orders/{number}/confirmation", json=answer, headers=ACME
        )
        assert ok(confirmed)["status"] == "changed"

        # The confirmation re-planned the gaskets by net change: the order's scheduled receipt
        # serves the same sales line.
        latest = ok(await api.get("/api/mrp/runs/latest"))
        assert (latest["kind"], latest["id"] > run["id"]) == ("net-change", True)
        receipt = ok(await api.get("/api/mrp/pegging", params={"supply": f"{number}/1"}))
        assert sales_of(receipt) == {SALES_LINE: "3880"}

        (late_alert,) = ok(await api.get("/api/purchasing/alerts"))
        assert (late_alert["kind"], late_alert["order"], late_alert["line"]) == (
            "late-confirmation",
            number,
            1,
        )
        assert (late_alert["days"], late_alert["expected"]) == (2, late.isoformat())
        affected = [
            (a["item"], a["demand"], a["kind"], a["quantity"]) for a in late_alert["affected"]
        ]
        assert affected == [("FG-100", SALES_LINE, "sales", "3880")]
        assert f"affects {SALES_LINE} (FG-100: 3,880)" in late_alert["message"]
        # The supplier sees its own order's alert too.
        (mine,) = ok(await api.get("/api/purchasing/alerts", headers=ACME))
        assert mine == late_alert

        # The promise moved two days later and says why.
        (now_line,) = ok(await api.get("/api/sales-orders"))
        assert at(now_line["promised_at"]) - sent_promise == timedelta(days=2)
        assert f"{number} confirmed {late.day} {late:%b} 00:00" in now_line["promise_reason"]
        history = ok(await api.get("/api/sales-orders/SO-1001/lines/1/promises"))
        assert number in history[-1]["reason"]
        assert history[-1]["promised_at"] == now_line["promised_at"]

        # Then only 3 000 of the 3 880: 880 gaskets = 880 pumps of the sales line short (judged
        # against the line's own pegs: the re-planned receipt is only the confirmed 3 000).
        answer = {"lines": [{"line": 1, "quantity": "3000"}]}
        ok(await api.post(f"/api/purchase-orders/{number}/confirmation", json=answer, headers=ACME))
        receipt = ok(await api.get("/api/mrp/pegging", params={"supply": f"{number}/1"}))
        assert sales_of(receipt) == {SALES_LINE: "3000"}
        alerts = ok(await api.get("/api/purchasing/alerts"))
        short_alert = next(a for a in alerts if a["kind"] == "short-confirmation")
        assert (short_alert["order"], short_alert["quantity"]) == (number, "880")
        assert [(a["demand"], a["kind"], a["quantity"]) for a in short_alert["affected"]] == [
            (SALES_LINE, "sales", "880")
        ]
        assert f"affects {SALES_LINE} (FG-100: 880)" in short_alert["message"]
        # Short as well as late: the 3 000 still come on the late date and the other 880 are
        # bought in the gaskets' lead time (sooner), so the promise stays on the late date; it
        # must not move earlier (it did, when a need beyond the order forgot the order's date).
        short_line = ok(await api.get("/api/sales-orders"))[0]
        assert short_line["promised_at"] == now_line["promised_at"]


def test_an_approved_buy_order_keeps_the_planned_orders_pegs_on_its_line(
    db: Database, plant_file: Path
) -> None:
    plant = PlantService(db, clock=lambda: T0)
    plant.load_master_data(plant_file)
    purchasing = PurchasingService(db, clock=lambda: T0, plan=plant.mrp_plan)
    purchasing.upsert_supplier(Supplier("ACME", "Acme Seals", 3, "EUR", Decimal(0)))
    purchasing.upsert_supplier_item(
        SupplierItem("ACME", "RM-GASKET", Decimal("0.3"), Decimal(0), Decimal(0), None, False)
    )
    plant.run_mrp()
    (planned,) = plant.mrp_planned_orders("RM-GASKET", "buy")

    approval, _ = approve(plant, purchasing, planned.id)

    (order,) = purchasing.orders()
    (line,) = order.lines
    assert (order.number, line.planned_order) == (approval.number, planned.id)
    assert line.pegged == (PeggedDemand("PLN/FG-100/15", Decimal(3880)),)
    # Stored as it was drafted: read back from the database, not from the drafting call.
    assert purchasing.order(order.number).order.lines[0].pegged == line.pegged
