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
from taktline_cloud.planning_approve import _line_for
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
    yield from serve(database_url, plant_file, live)


def serve(
    database_url: str, plant_file: Path, live: list[Event]
) -> Iterator[tuple[TestClient, Clock]]:
    """The plant's REST API over `plant_file`, with capable-to-promise on, as app.py wires it."""
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


@pytest.fixture
def two_orders(tmp_path: Path) -> Path:
    """The demo plant (two shifts Monday to Saturday, Shanghai time) with no cast housings in
    stock, plenty of every other component, and two sales orders of 4 000 pumps each."""
    data = yaml.safe_load(PLANT.read_text(encoding="utf-8"))
    assert data["calendar"]["timezone"] == "Asia/Shanghai"
    assert data["calendar"]["shifts"] == {"mon-sat": ["06:00-14:00", "14:00-22:00"]}
    data["opening_stock"] = [
        {**s, "quantity": "100000"} if s["item"].startswith("RM-") else s
        for s in data["opening_stock"]
        if s["item"] != "RM-HOUSING"
    ]
    data["sales_orders"] = [
        {
            "number": number,
            "customer": "CUST-ACME",
            "lines": [{"line": 1, "item": "FG-100", "quantity": "4000", "requested_in_days": days}],
        }
        for number, days in (("SO-1001", 7), ("SO-1002", 10))
    ]
    data["work_orders"] = []
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def shared(
    database_url: str, two_orders: Path, live: list[Event]
) -> Iterator[tuple[TestClient, Clock]]:
    yield from serve(database_url, two_orders, live)


def test_orders_share_purchase_orders_and_promises_keep_the_shift_calendar(
    shared: tuple[TestClient, Clock],
) -> None:
    api, _ = shared
    acme = {"code": "ACME", "name": "Acme Castings", "lead_days": 10}
    ok(api.put("/api/suppliers/ACME", json=acme))
    offer = {"item": "RM-HOUSING", "unit_price": "14.50", "pack_size": "100"}
    ok(api.put("/api/suppliers/ACME/items", json=offer))
    # PO-000001: 4 000 housings on Tuesday 1 Dec (00:00 UTC = 08:00 in Shanghai, in the
    # day shift); PO-000002: 4 000 on Sunday 6 Dec, when the line does not work.
    for needed in ("2026-12-01", "2026-12-06"):
        wanted = {"item": "RM-HOUSING", "quantity": "4000", "needed": needed}
        ok(api.post("/api/purchase-orders", json={"requisitions": [wanted]}), 201)
    ok(api.post("/api/purchase-orders/PO-000001/send"))
    ok(api.post("/api/purchase-orders/PO-000002/send"))

    lines = {row["order"]: row for row in ok(api.get("/api/sales-orders"))}
    # SO-1001 (requested 1 Dec, first): 120 from stock, 3 880 made from 3 880 housings of
    # PO-000001 at 2 160/h = 1 h 47 min 47 s → 1 Dec 01:48 UTC.
    first = lines["SO-1001"]
    assert at(first["promised_at"]) == datetime(2026, 12, 1, 1, 48, tzinfo=UTC)
    assert (
        "RM-HOUSING short by 3,880 until PO-000001 confirmed 1 Dec 00:00"
        in (first["promise_reason"])
    )
    assert first["at_risk"] is False
    # SO-1002: PO-000001 has only 120 left for it, so it waits for PO-000002 (alone it
    # would have been made from PO-000001 on 1 Dec). That arrives on a Sunday: the line
    # opens Monday 06:00 in Shanghai = Sunday 22:00 UTC; 4 000 at 2 160/h = 1 h 51 min
    # 7 s → 6 Dec 23:52 UTC, after its requested 4 Dec.
    second = lines["SO-1002"]
    assert at(second["promised_at"]) == datetime(2026, 12, 6, 23, 52, tzinfo=UTC)
    reason = second["promise_reason"]
    assert "RM-HOUSING short by 4,000 until PO-000002 confirmed 6 Dec 00:00" in reason
    assert "(shift calendar: closed until 6 Dec 22:00)" in reason
    assert second["at_risk"] is True

    (last,) = ok(api.get("/api/sales-orders/SO-1002/lines/1/promises"))[-1:]
    kinds = [(s["kind"], s["reference"]) for s in last["steps"]]
    assert ("component", "PO-000002") in kinds
    assert ("component", "PO-000001") not in kinds
    (calendar,) = [s for s in last["steps"] if s["kind"] == "calendar"]
    assert calendar["reference"] == "LINE-1"
    assert at(calendar["at"]) == datetime(2026, 12, 6, 22, tzinfo=UTC)
    assert last["steps"][-1]["kind"] == "production"


def test_routes_choose_the_line_and_a_line_keeps_its_own_calendar(
    db: Database, tmp_path: Path
) -> None:
    # LINE-2 works round the clock (its own calendar) and is the only line routed for FG-100,
    # at 1 000/h: 10 000 made from Tuesday 08:00 UTC take 10 h → 18:00. LINE-1 (2 160/h, in
    # its day shift) would finish at 12:38, so the promise shows the routes are obeyed.
    data = yaml.safe_load(PLANT.read_text(encoding="utf-8"))
    data["lines"].append(
        {
            "code": "LINE-2",
            "name": "Assembly line 2",
            "gateway": "GW-2",
            "machines": [{"code": "M9", "name": "Press"}],
            "work_centre": {"code": "WC-LINE-2", "standard_rate_per_hour": "1500"},
            "calendar": {"shifts": {"mon-sun": ["00:00-24:00"]}},
        }
    )
    data["routes"] = {"FG-100": [{"line": "LINE-2", "standard_rate_per_hour": "1000"}]}
    data["opening_stock"] = [
        {**s, "quantity": "100000"} if s["item"].startswith("RM-") else s
        for s in data["opening_stock"]
    ]
    data["sales_orders"][0]["lines"] = [
        {"line": 1, "item": "FG-100", "quantity": "10120", "requested_in_days": 14}
    ]
    data["work_orders"] = []
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    plant = PlantService(db, clock=lambda: T0, capable_to_promise=True)
    plant.load_master_data(path)

    assert plant.item_lines("FG-100") == ["LINE-2"]
    assert _line_for(plant, "FG-100") == "LINE-2"  # where an approved make order goes
    (line,) = plant.sales_orders()
    assert line.promised_at == T0 + timedelta(hours=10)
    assert "10,000 made on LINE-2 at 1,000/h standard" in (line.promise_reason or "")
    assert "shift calendar" not in (line.promise_reason or "")

    # The routes taken out of the file (loaded again): every line makes FG-100, LINE-1 first.
    del data["routes"]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    plant.load_master_data(path)
    assert plant.item_lines("FG-100") == ["LINE-1", "LINE-2"]
    (line,) = plant.sales_orders()
    assert line.promised_at == datetime(2026, 11, 24, 12, 38, tzinfo=UTC)
    assert "10,000 made on LINE-1 at 2,160/h standard" in (line.promise_reason or "")
