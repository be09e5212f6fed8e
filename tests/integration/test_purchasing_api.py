"""Purchasing over REST on SQLite and PostgreSQL: suppliers, the PO flow from draft to closed
with a receipt into stock, the supplier's scope (header stand-in for authentication), and
concurrent receipts that never pass the over-receipt tolerance."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taktline_cloud.api import ApiContext, install_api
from taktline_cloud.errors import Conflict
from taktline_cloud.live import LiveHub, ServiceGateway, ServiceWorker
from taktline_cloud.purchasing.confirmations import LineAnswer
from taktline_cloud.purchasing.suppliers import Supplier, SupplierItem
from taktline_cloud.purchasing_service import PurchasingService, RequisitionInput
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database
from tests.integration.test_cloud_api import cloud_settings, running_cloud
from tests.support import Mosquitto

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
ACME = {"X-Taktline-Supplier": "ACME"}
BETA = {"X-Taktline-Supplier": "BETA"}


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    with Database(database_url) as database:
        PlantService(database, clock=lambda: T0).load_master_data(PLANT)
        yield database


class Clock:
    """The service's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(db: Database, clock: Clock) -> Iterator[TestClient]:
    app = FastAPI()
    install_api(app)
    hub = LiveHub(max_queue=16)
    gateway = ServiceGateway(PlantService(db, clock=clock), ServiceWorker(), hub)
    app.state.taktline = ApiContext(gateway, hub, purchasing=PurchasingService(db, clock=clock))
    with TestClient(app) as test_client:
        yield test_client


def ok(response: Any, code: int = 200) -> Any:
    assert response.status_code == code, response.text
    return response.json()


def refused(response: Any, code: int) -> str:
    assert response.status_code == code, response.text
    return str(response.json()["detail"])


def housing(client: TestClient) -> tuple[str, str]:
    (row,) = ok(client.get("/api/stock/balances", params={"item": "RM-HOUSING"}))
    assert row["location"] == "WH1/RAW"
    return row["on_hand"], row["unit_cost"]


def setup_suppliers(client: TestClient) -> None:
    acme = {"code": "ACME", "name": "Acme Castings", "lead_days": 10}
    ok(client.put("/api/suppliers/ACME", json=acme | {"over_receipt_tolerance": "0.05"}))
    ok(client.put("/api/suppliers/BETA", json={"code": "BETA", "name": "Beta", "lead_days": 5}))
    offer = {"item": "RM-HOUSING", "unit_price": "14.50", "pack_size": "100"}
    ok(client.put("/api/suppliers/ACME/items", json=offer))
    ok(client.put("/api/suppliers/BETA/items", json={"item": "RM-SCREW-M6", "unit_price": "0.05"}))


def test_full_flow_from_draft_to_closed_moves_stock_and_value(
    client: TestClient, clock: Clock
) -> None:
    setup_suppliers(client)
    assert [s["code"] for s in ok(client.get("/api/suppliers"))] == ["ACME", "BETA"]
    drafted = ok(
        client.post(
            "/api/purchase-orders",
            json={
                "requisitions": [
                    {"item": "RM-HOUSING", "quantity": "950", "needed": "2026-12-10"},
                    {"item": "RM-SCREW-M6", "quantity": "20000", "needed": "2026-12-05"},
                ]
            },
        ),
        201,
    )
    assert [(o["number"], o["supplier"], o["status"]) for o in drafted] == [
        ("PO-000001", "ACME", "draft"),
        ("PO-000002", "BETA", "draft"),
    ]
    line = drafted[0]["lines"][0]
    assert (line["item"], line["quantity"], line["requested"], line["unit_price"]) == (
        "RM-HOUSING",
        "1000",  # rounded up to whole packs of 100
        "950",
        "14.5",
    )

    # A draft takes no receipt; sending twice is refused by the state table.
    receipt = "/api/purchase-orders/PO-000001/lines/1/receipts"
    assert "cannot become partially-received" in refused(
        client.post(receipt, json={"quantity": "1", "lot": "L0"}), 409
    )
    assert ok(client.post("/api/purchase-orders/PO-000001/send"))["status"] == "sent"
    assert refused(client.post("/api/purchase-orders/PO-000001/send"), 409) == (
        "purchase order PO-000001 is sent: cannot become sent "
        "(allowed: cancelled, changed, confirmed)"
    )

    # The supplier confirms a week later: four days late and 200 short.
    clock.now = T0 + timedelta(days=7)
    answer = {"lines": [{"line": 1, "date": "2026-12-14", "quantity": "800"}]}
    confirmed = ok(
        client.post("/api/purchase-orders/PO-000001/confirmation", json=answer, headers=ACME)
    )
    assert confirmed["status"] == "changed"
    assert [
        (c["confirmation"], c["confirmed_by"], c["previous_quantity"], c["confirmed_quantity"])
        for c in confirmed["confirmations"]
    ] == [(1, "supplier:ACME", "1000", "800")]
    assert confirmed["lines"][0]["expected_date"] == "2026-12-14"

    alerts = ok(client.get("/api/purchasing/alerts"))
    assert [(a["kind"], a["order"], a["days"], a["quantity"]) for a in alerts] == [
        ("late-confirmation", "PO-000001", 4, "800"),
        ("short-confirmation", "PO-000001", 0, "200"),
    ]
    assert alerts[1]["message"] == (
        "PO-000001 line 1 (RM-HOUSING): confirmed 200 short; affects no order"
    )

    # Partial receipt into a lot: stock and the moving average move (6000 @ 12.50 before).
    assert housing(client) == ("6000", "12.5")
    clock.now = T0 + timedelta(days=20)
    first = ok(client.post(receipt, json={"quantity": "300", "lot": "LOT-A"}), 201)
    assert first["order"]["status"] == "partially-received"
    assert (first["line_closed"], first["unit_cost"]) == (False, "14.5")
    # (6000 x 12.50 + 300 x 14.50) / 6300
    assert housing(client) == ("6300", "12.595238")

    # Agreed 800 with 5 % tolerance: at most 840 in all, 540 more.
    assert refused(client.post(receipt, json={"quantity": "541", "lot": "LOT-B"}), 409) == (
        "PO-000001 line 1: receiving 541 would exceed the agreed 800 by more than the 5 % "
        "tolerance (at most 540 more)"
    )
    final = ok(client.post(receipt, json={"quantity": "520", "lot": "LOT-B"}), 201)
    assert final["order"]["status"] == "received"
    assert final["line_closed"] is True
    assert housing(client)[0] == "6820"
    assert "is received: cannot become partially-received" in refused(
        client.post(receipt, json={"quantity": "1", "lot": "X"}), 409
    )

    ledger = ok(client.get("/api/stock/ledger", params={"item": "RM-HOUSING"}))
    moves = [(m["reference"], m["from_location"], m["quantity"]) for m in ledger[:2]]
    assert moves == [
        ("PO-000001/1", "VIRTUAL/SUPPLIER", "520"),
        ("PO-000001/1", "VIRTUAL/SUPPLIER", "300"),
    ]

    assert ok(client.post("/api/purchase-orders/PO-000001/close"))["status"] == "closed"
    assert "closed: cannot become cancelled" in refused(
        client.post("/api/purchase-orders/PO-000001/cancel"), 409
    )
    detail = ok(client.get("/api/purchase-orders/PO-000001"))
    assert [(r["lot"], r["quantity"], r["location"]) for r in detail["receipt_rows"]] == [
        ("LOT-A", "300", "WH1/RAW"),
        ("LOT-B", "520", "WH1/RAW"),
    ]
    assert [(r["lot"], r["quantity"]) for r in detail["lines"][0]["receipts"]] == [
        ("LOT-A", "300"),
        ("LOT-B", "520"),
    ]
    # Closed orders raise no alert; the draft to BETA neither (never sent, nothing confirmed).
    assert ok(client.get("/api/purchasing/alerts")) == []
    listed = ok(client.get("/api/purchase-orders", params={"status": ["closed", "draft"]}))
    assert [(o["number"], o["status"]) for o in listed] == [
        ("PO-000001", "closed"),
        ("PO-000002", "draft"),
    ]
    assert ok(client.get("/api/purchase-orders", params={"item": "RM-SCREW-M6"}))[0]["number"] == (
        "PO-000002"
    )
    assert "a status is one of" in refused(
        client.get("/api/purchase-orders", params={"status": "lost"}), 422
    )


def test_a_supplier_sees_and_confirms_only_its_own_sent_orders(client: TestClient) -> None:
    setup_suppliers(client)
    ok(
        client.post(
            "/api/purchase-orders",
            json={
                "requisitions": [
                    {"item": "RM-HOUSING", "quantity": "100", "needed": "2026-12-10"},
                    {"item": "RM-SCREW-M6", "quantity": "100", "needed": "2026-12-10"},
                ]
            },
        ),
        201,
    )
    # A draft does not exist for its supplier yet.
    assert ok(client.get("/api/purchase-orders", headers=ACME)) == []
    assert refused(client.get("/api/purchase-orders/PO-000001", headers=ACME), 404) == (
        "purchase order PO-000001 not found"
    )
    ok(client.post("/api/purchase-orders/PO-000001/send"))
    ok(client.post("/api/purchase-orders/PO-000002/send"))

    assert [o["number"] for o in ok(client.get("/api/purchase-orders", headers=ACME))] == [
        "PO-000001"
    ]
    assert ok(client.get("/api/purchase-orders/PO-000001", headers=ACME))["supplier"] == "ACME"
    # Another supplier's order is not found, for reading and for confirming.
    assert refused(client.get("/api/purchase-orders/PO-000002", headers=ACME), 404) == (
        "purchase order PO-000002 not found"
    )
    confirm = {"lines": [{"line": 1}]}
    refused(
        client.post("/api/purchase-orders/PO-000002/confirmation", json=confirm, headers=ACME), 404
    )
    # Its own order: it may confirm, not send, cancel, close or receive.
    for action in ("send", "cancel", "close"):
        detail = refused(client.post(f"/api/purchase-orders/PO-000001/{action}", headers=ACME), 403)
        assert detail == f"supplier:ACME may not {action} purchase order PO-000001"
    refused(
        client.post(
            "/api/purchase-orders/PO-000001/lines/1/receipts",
            json={"quantity": "1", "lot": "L1"},
            headers=ACME,
        ),
        403,
    )
    assert refused(client.get("/api/suppliers", headers=ACME), 403) == (
        "supplier:ACME may not list suppliers: buyers only"
    )
    confirmed = ok(
        client.post("/api/purchase-orders/PO-000001/confirmation", json=confirm, headers=ACME)
    )
    assert confirmed["status"] == "confirmed"
    assert ok(client.get("/api/purchase-orders/PO-000002"))["status"] == "sent"  # untouched
    # Nothing was cancelled by the refused calls.
    assert ok(client.get("/api/purchase-orders/PO-000001"))["status"] == "confirmed"
    assert ok(client.get("/api/purchase-orders", headers=BETA))[0]["number"] == "PO-000002"


def test_refused_input_names_what_was_wrong(client: TestClient) -> None:
    setup_suppliers(client)
    no_source = client.post(
        "/api/purchase-orders",
        json={"requisitions": [{"item": "RM-GASKET", "quantity": "5", "needed": "2026-12-10"}]},
    )
    assert "no supplier sells RM-GASKET" in refused(no_source, 422)
    assert (
        refused(
            client.put("/api/suppliers/NOPE/items", json={"item": "RM-HOUSING", "unit_price": "1"}),
            404,
        )
        == "no supplier 'NOPE'"
    )
    assert (
        refused(
            client.put("/api/suppliers/ACME/items", json={"item": "NOPE", "unit_price": "1"}), 422
        )
        == "unknown item 'NOPE'"
    )
    assert refused(client.get("/api/purchase-orders/PO-999999"), 404) == (
        "purchase order PO-999999 not found"
    )
    refused(
        client.put("/api/suppliers/ACME", json={"code": "ACME", "name": "x", "lead_days": -1}), 422
    )


def test_the_routes_are_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"get", "post"} <= set(paths["/api/purchase-orders"])
    for action in ("send", "cancel", "close", "confirmation"):
        assert "post" in paths[f"/api/purchase-orders/{{number}}/{action}"]
    assert "post" in paths["/api/purchase-orders/{number}/lines/{line}/receipts"]
    assert "get" in paths["/api/purchasing/alerts"]
    send = paths["/api/purchase-orders/{number}/send"]["post"]
    assert "stand-in for real authentication" in send["description"]
    assert "403" in send["responses"]


def test_concurrent_receipts_never_exceed_the_tolerance(db: Database, database_url: str) -> None:
    """20 writers, each on its own connection, receive 3 on a line agreed at 10 with 10 %
    tolerance (at most 11): exactly 3 receipts pass, the rest are refused."""
    buyer = PurchasingService(db, clock=lambda: T0)
    buyer.upsert_supplier(Supplier("ACME", "Acme", 2, over_receipt_tolerance=Decimal("0.1")))
    buyer.upsert_supplier_item(SupplierItem("ACME", "RM-HOUSING", Decimal(14)))
    (order,) = buyer.draft([RequisitionInput("RM-HOUSING", Decimal(10), date(2026, 12, 10))])
    buyer.send(order.number)
    buyer.confirm(order.number, {1: LineAnswer()})
    writers = 20
    databases = [Database(database_url) for _ in range(writers)]
    start = threading.Barrier(writers, timeout=30)

    def receive_one(index: int) -> Exception | None:
        service = PurchasingService(databases[index], clock=lambda: T0)
        start.wait()
        try:
            service.receive(order.number, 1, Decimal(3), f"LOT-{index}")
        except Conflict as exc:
            return exc
        return None

    try:
        with ThreadPoolExecutor(writers) as pool:
            outcomes = list(pool.map(receive_one, range(writers), timeout=60))
    finally:
        for database in databases:
            database.close()
    refusals = [o for o in outcomes if o is not None]
    assert len(refusals) == writers - 3
    assert all("would exceed the agreed 10" in str(e) for e in refusals), refusals
    detail = buyer.order(order.number)
    assert detail.order.lines[0].received == 9
    assert len(detail.receipts) == 3
    with db.transaction(write=False) as tx:
        assert tx.on_hand("RM-HOUSING", "WH1/RAW") == 6009


@pytest.mark.mosquitto
async def test_the_running_cloud_serves_purchasing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The composition root wires the purchasing service in (SQLite, real broker)."""
    settings = cloud_settings(tmp_path, mosquitto.port)
    async with running_cloud(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        supplier = {"code": "ACME", "name": "Acme", "lead_days": 3}
        assert (await http.put("/api/suppliers/ACME", json=supplier)).status_code == 200
        listed = await http.get("/api/suppliers")
        assert [s["code"] for s in listed.json()] == ["ACME"]
        assert (await http.get("/api/purchase-orders")).json() == []
        forbidden = await http.get("/api/suppliers", headers=ACME)
        assert forbidden.status_code == 403
