"""Capable-to-promise from the live plant, over REST on SQLite and PostgreSQL.

A sales order far beyond finished stock is made on the line once its components are there; one
component (the cast housing) comes from a purchase order. The promise follows that order: its
confirmed date when the supplier confirms two days later, then the gasket's purchase lead time
once the housings are received. Every promise keeps its reason chain in its history.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taktline_cloud.api import ApiContext, install_api
from taktline_cloud.events import Event
from taktline_cloud.live import LiveHub, ServiceGateway, ServiceWorker
from taktline_cloud.purchasing_service import PurchasingService
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
ACME = {"X-Taktline-Supplier": "ACME"}
PROMISES = "/api/sales-orders/SO-1001/lines/1/promises"
# 10 000 ordered, 120 in stock: 9 880 made at the standard 2 160/h = 4 h 34 min 27 s.
MAKE = timedelta(hours=4, minutes=35)  # rounded up to the minute


class Clock:
    """The services' clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def plant_file(tmp_path: Path) -> Path:
    """The demo plant with one large sales order and no work orders."""
    data = yaml.safe_load(PLANT.read_text(encoding="utf-8"))
    data["sales_orders"][0]["lines"] = [
        {"line": 1, "item": "FG-100", "quantity": "10000", "requested_in_days": 14}
    ]
    data["work_orders"] = []
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def live() -> list[Event]:
    """The events the purchasing hook handed on (what the app sends to the live feed)."""
    return []


@pytest.fixture
def client(
    database_url: str, plant_file: Path, live: list[Event]
) -> Iterator[tuple[TestClient, Clock]]:
    clock = Clock()
    with Database(database_url) as db:
        plant = PlantService(db, clock=clock, capable_to_promise=True)
        plant.load_master_data(plant_file)
        app = FastAPI()
        install_api(app)
        hub = LiveHub(max_queue=16)
        gateway = ServiceGateway(plant, ServiceWorker(), hub)
        # As app.py wires it: purchasing runs on the service's worker thread and re-promises.
        purchasing = PurchasingService(
            db, clock=clock, on_supply_changed=lambda: live.extend(plant.repromise())
        )
        app.state.taktline = ApiContext(gateway, hub, purchasing=purchasing)
        with TestClient(app) as test_client:
            yield test_client, clock


def ok(response: Any, code: int = 200) -> Any:
    assert response.status_code == code, response.text
    return response.json()


def the_line(client: TestClient) -> dict[str, Any]:
    (line,) = ok(client.get("/api/sales-orders"))
    return dict(line)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_promise_follows_the_purchase_order_of_a_component(
    client: tuple[TestClient, Clock], live: list[Event]
) -> None:
    api, clock = client
    # Without the order: housings 6 000 of 9 880, bought in 5 days; gaskets 6 000 of 10 077.6,
    # bought in 7 days: the gasket's lead time decides.
    line = the_line(api)
    assert at(line["promised_at"]) == T0 + timedelta(days=7) + MAKE
    assert "component RM-GASKET short by 4,077.6: 4,077.6 to buy, 7 days" in line["promise_reason"]

    acme = {"code": "ACME", "name": "Acme Castings", "lead_days": 10}
    ok(api.put("/api/suppliers/ACME", json=acme))
    offer = {"item": "RM-HOUSING", "unit_price": "14.50", "pack_size": "100"}
    ok(api.put("/api/suppliers/ACME/items", json=offer))
    wanted = {"item": "RM-HOUSING", "quantity": "4000", "needed": "2026-12-10"}
    ok(api.post("/api/purchase-orders", json={"requisitions": [wanted]}), 201)
    assert the_line(api)["promised_at"] == line["promised_at"]  # a draft is no supply yet

    # Sent: the housings now come with PO-000001 on 10 Dec, later than the gaskets.
    ok(api.post("/api/purchase-orders/PO-000001/send"))
    line = the_line(api)
    sent_promise = at(line["promised_at"])
    assert sent_promise == datetime(2026, 12, 10, tzinfo=UTC) + MAKE
    assert (
        "RM-HOUSING short by 3,880 until PO-000001 confirmed 10 Dec 00:00"
        in (line["promise_reason"])
    )
    assert line["at_risk"] is True  # requested 8 Dec

    # The supplier confirms two days later: the promise moves two days, and says why.
    clock.now = T0 + timedelta(hours=2)
    answer = {"lines": [{"line": 1, "date": "2026-12-12", "quantity": "4000"}]}
    ok(api.post("/api/purchase-orders/PO-000001/confirmation", json=answer, headers=ACME))
    line = the_line(api)
    assert at(line["promised_at"]) - sent_promise == timedelta(days=2)
    moved = [e for e in live if e.type == "promise.changed"]
    assert moved
    assert moved[-1].data["promised_at"] == line["promised_at"]
    assert at(moved[-1].data["previous_promised_at"]) == sent_promise

    history = ok(api.get(PROMISES))
    last = history[-1]
    assert last["promised_at"] == line["promised_at"]
    assert "PO-000001 confirmed 12 Dec 00:00" in last["reason"]
    (component,) = [s for s in last["steps"] if s["kind"] == "component"]
    assert (component["reference"], component["quantity"]) == ("PO-000001", "3880")
    assert at(component["at"]) == datetime(2026, 12, 12, tzinfo=UTC)
    production = last["steps"][-1]
    assert (production["kind"], production["reference"]) == ("production", "LINE-1")
    assert at(production["at"]) == at(line["promised_at"])

    # The housings arrive a day in: only the gaskets' purchase is left to wait for.
    clock.now = T0 + timedelta(days=1)
    receipt = {"quantity": "4000", "lot": "LOT-1"}
    ok(api.post("/api/purchase-orders/PO-000001/lines/1/receipts", json=receipt), 201)
    line = the_line(api)
    assert at(line["promised_at"]) == clock.now + timedelta(days=7) + MAKE
    last = ok(api.get(PROMISES))[-1]
    assert not any(s["reference"] == "PO-000001" for s in last["steps"])
    bought = {s["reference"]: at(s["at"]) for s in last["steps"] if s["kind"] == "purchase"}
    assert sorted(bought) == ["RM-GASKET", "RM-SCREW-M6", "RM-SEALANT"]
    assert max(bought, key=lambda item: bought[item]) == "RM-GASKET"
    # Oldest first; the earlier promises keep their own reasons.
    reasons = [h["reason"] for h in ok(api.get(PROMISES))]
    assert any("PO-000001 confirmed 10 Dec" in r for r in reasons)
    assert any("PO-000001 confirmed 12 Dec" in r for r in reasons)
