"""Sales orders through the REST API on SQLite and PostgreSQL: booked, changed and cancelled,
each change promised at once (from stock, else capable-to-promise) with the promise history
growing, announced live, and re-planned by net-change MRP (a cancelled line is pegged no more).

The demo plant without its sales and work orders: 120 FG-100 in stock, no running order. 100
pumps come from stock now; 10 000 are made on LINE-1 at the standard 2 160/h once the gaskets
(6 000 of 10 077.6 in stock, 7 days to buy) are there: 7 days + 4 h 35 min (as in
test_promise_ctp).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taktline_cloud.api import ApiContext, install_api
from taktline_cloud.live import LiveHub, ServiceGateway, ServiceWorker
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database
from tests.support import Clock

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
FG = "FG-100"
MAKE_10000 = timedelta(days=7, hours=4, minutes=35)
SO = "/api/sales-orders"


@pytest.fixture
def plant_file(tmp_path: Path) -> Path:
    data = yaml.safe_load(PLANT.read_text(encoding="utf-8"))
    data["sales_orders"] = []
    data["work_orders"] = []
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def client(database_url: str, plant_file: Path) -> Iterator[TestClient]:
    with Database(database_url) as db:
        plant = PlantService(db, clock=Clock(T0), capable_to_promise=True)
        plant.load_master_data(plant_file)
        app = FastAPI()
        install_api(app)
        hub = LiveHub(max_queue=64)
        app.state.taktline = ApiContext(ServiceGateway(plant, ServiceWorker(), hub), hub)
        with TestClient(app) as test_client:
            yield test_client


def ok(response: Any, code: int = 200) -> Any:
    assert response.status_code == code, response.text
    return response.json()


def refused(response: Any, code: int, *words: str) -> None:
    assert response.status_code == code, response.text
    detail = str(response.json()["detail"])
    for word in words:
        assert word in detail, detail


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def order(number: str, quantity: str, requested: str, customer: str = "CUST-ACME") -> Any:
    line = {"item": FG, "quantity": quantity, "requested_date": requested}
    return {"number": number, "customer": customer, "lines": [line]}


def planned_fg(api: TestClient) -> tuple[Decimal, set[str]]:
    """The latest run's planned FG-100 quantity and the demands its planned orders serve."""
    orders = ok(api.get("/api/mrp/planned-orders", params={"item": FG}))
    served: set[str] = set()
    for planned in orders:
        pegging = ok(api.get("/api/mrp/pegging", params={"supply": planned["id"], "item": FG}))
        served |= {peg["demand"] for peg in pegging["pegs"]}
    return sum((Decimal(o["quantity"]) for o in orders), Decimal(0)), served


def test_an_order_is_promised_changed_and_cancelled_live_and_in_mrp(client: TestClient) -> None:
    api = client
    ok(api.post("/api/mrp/runs"), 201)
    before_quantity, before_served = planned_fg(api)
    with api.websocket_connect("/ws/live") as live:
        assert live.receive_json()["type"] == "snapshot"

        # Booked: 100 of 120 in stock, promised now.
        booked = ok(api.post(SO, json=order("SO-2001", "100", "2026-12-08")), 201)
        assert booked["status"] == "open"
        (line,) = booked["lines"]
        assert (line["status"], line["quantity"], line["requested_date"]) == (
            "open", "100", "2026-12-08"
        )
        assert at(line["promised_at"]) == T0
        assert line["at_risk"] is False
        first = [live.receive_json(), live.receive_json()]
        assert [e["type"] for e in first] == ["promise.changed", "sales_order.updated"]
        assert first[1]["data"]["number"] == "SO-2001"
        history = ok(api.get(f"{SO}/SO-2001/lines/1/promises"))
        assert len(history) == 1

        # 10 000: stock no longer covers it; capable-to-promise makes it, the promise moves.
        changed = ok(api.patch(f"{SO}/SO-2001/lines/1", json={"quantity": "10000"}))
        (line,) = changed["lines"]
        assert line["quantity"] == "10000"
        assert at(line["promised_at"]) == T0 + MAKE_10000
        assert "RM-GASKET" in line["promise_reason"]
        moved = live.receive_json()
        assert moved["type"] == "promise.changed"
        assert at(moved["data"]["previous_promised_at"]) == T0
        assert at(moved["data"]["promised_at"]) == T0 + MAKE_10000
        assert moved["data"]["steps"], "a capable-to-promise promise carries its reason chain"
        assert live.receive_json()["type"] == "sales_order.updated"
        history = ok(api.get(f"{SO}/SO-2001/lines/1/promises"))
        assert [at(h["promised_at"]) for h in history] == [T0, T0 + MAKE_10000]
        assert history[-1]["steps"][-1]["kind"] == "production"

        # Requested earlier than it can be made: at risk, and the history grows although the
        # date stands (the customer was given it again).
        changed = ok(api.patch(f"{SO}/SO-2001/lines/1", json={"requested_date": "2026-11-26"}))
        (line,) = changed["lines"]
        assert line["requested_date"] == "2026-11-26"
        assert line["at_risk"] is True
        assert len(ok(api.get(f"{SO}/SO-2001/lines/1/promises"))) == 3

        # MRP re-planned it by net change: a planned make order now serves the line.
        latest = ok(api.get("/api/mrp/runs/latest"))
        assert latest["kind"] == "net-change"
        quantity, served = planned_fg(api)
        assert "SO-2001/1" in served
        assert quantity > before_quantity

        # Cancelled: closed, no longer at risk, gone from the big screen and from MRP's plan.
        while live.receive_json()["type"] != "sales_order.updated":
            pass
        cancelled = ok(api.post(f"{SO}/SO-2001/lines/1/cancel"))
        assert cancelled["status"] == "cancelled"
        (line,) = cancelled["lines"]
        assert (line["status"], line["at_risk"]) == ("cancelled", False)
        assert at(line["cancelled_at"]) == T0
        event = live.receive_json()
        assert event["type"] == "sales_order.updated"
        assert event["data"]["lines"][0]["status"] == "cancelled"
    rows = ok(api.get(SO))
    assert [(r["order"], r["status"]) for r in rows] == [("SO-2001", "cancelled")]
    assert ok(api.get("/api/dashboard"))["sales_orders"] == []
    after = ok(api.get("/api/mrp/runs/latest"))
    assert (after["kind"], after["id"] > latest["id"]) == ("net-change", True)
    assert planned_fg(api) == (before_quantity, before_served)
    assert "SO-2001/1" not in before_served
    # Its promises stay readable; a cancelled line cannot change or be cancelled again.
    assert len(ok(api.get(f"{SO}/SO-2001/lines/1/promises"))) == 3
    refused(api.patch(f"{SO}/SO-2001/lines/1", json={"quantity": "5"}), 409, "cancelled")
    refused(api.post(f"{SO}/SO-2001/lines/1/cancel"), 409, "SO-2001/1 is cancelled")
    refused(api.post(f"{SO}/SO-2001/cancel"), 409, "SO-2001 is cancelled")


def test_an_order_of_two_lines_shares_stock_and_is_cancelled_whole(client: TestClient) -> None:
    api = client
    ok(api.post("/api/customers", json={"code": "CUST-BETA", "name": "Beta Valves"}), 201)
    assert {"code": "CUST-BETA", "name": "Beta Valves"} in ok(api.get("/api/customers"))
    assert FG in {item["sku"] for item in ok(api.get("/api/items"))}
    lines = [
        {"item": FG, "quantity": "80", "requested_date": "2026-12-01"},
        # an instant with its zone names its UTC day: 2 Dec 06:00 +08:00 is 1 Dec 22:00 UTC
        {"item": FG, "quantity": "80", "requested_date": "2026-12-02T06:00:00+08:00"},
    ]
    booked = ok(api.post(SO, json={"customer": "CUST-BETA", "lines": lines}), 201)
    assert booked["number"] == "SO-1001"  # numbered when not given
    first, second = booked["lines"]
    assert second["requested_date"] == "2026-12-01"
    assert at(first["promised_at"]) == T0  # 80 of 120 from stock
    # 40 left in stock, 40 made at the standard 2 160/h: 67 s, rounded up to 2 minutes.
    assert at(second["promised_at"]) == T0 + timedelta(minutes=2)
    assert "40 from stock; 40 made on LINE-1" in second["promise_reason"]

    # The first line cancelled: what was reserved for it is given back, and its stock goes to
    # the second one.
    held = {"item": FG, "location": "WH1/FG", "demand": "SO-1001/1", "quantity": "80"}
    ok(api.post("/api/stock/reservations", json=held), 201)
    after = ok(api.post(f"{SO}/SO-1001/lines/1/cancel"))
    assert [x["status"] for x in after["lines"]] == ["cancelled", "open"]
    assert ok(api.get("/api/stock/reservations", params={"demand": "SO-1001/1"})) == []
    (released,) = ok(
        api.get("/api/stock/reservations", params={"demand": "SO-1001/1", "closed": True})
    )
    assert (released["status"], released["released"]) == ("released", "80")
    assert after["status"] == "open"
    assert at(after["lines"][1]["promised_at"]) == T0
    whole = ok(api.post(f"{SO}/SO-1001/cancel"))
    assert whole["status"] == "cancelled"
    assert ok(api.get(f"{SO}/SO-1001"))["status"] == "cancelled"


BAD_ORDERS: list[tuple[dict[str, Any], str]] = [
    (order("SO-9", "10", "2026-12-01", customer="NOBODY"), "unknown customer 'NOBODY'"),
    (
        {"customer": "CUST-ACME", "lines": [{"item": "NOPE", "quantity": "1",
                                             "requested_date": "2026-12-01"}]},
        "line 1: unknown item 'NOPE'",
    ),
    (order("SO-9", "0", "2026-12-01"), "line 1 quantity must be > 0"),
    (order("SO-9", "-3", "2026-12-01"), "line 1 quantity must be > 0"),
    (order("SO-9", "10", "2026-12-01T08:00:00"), "has no time zone"),
    (
        {"customer": "CUST-ACME", "lines": [{"item": FG, "quantity": 1.5,
                                             "requested_date": "2026-12-01"}]},
        "decimal string",
    ),
    ({"customer": "CUST-ACME", "lines": []}, "at least 1"),
    (order("SO 9", "10", "2026-12-01"), "without spaces"),
]


def test_bad_orders_are_refused_naming_the_problem(client: TestClient) -> None:
    for body, words in BAD_ORDERS:
        refused(client.post(SO, json=body), 422, words)
    assert ok(client.get(SO)) == []


def test_bad_changes_are_refused(client: TestClient) -> None:
    api = client
    ok(api.post(SO, json=order("SO-2001", "10", "2026-12-01")), 201)
    refused(api.post(SO, json=order("SO-2001", "5", "2026-12-02")), 409, "SO-2001 already exists")
    refused(api.patch(f"{SO}/SO-2001/lines/1", json={}), 422, "nothing to change")
    refused(api.patch(f"{SO}/SO-2001/lines/1", json={"quantity": "0"}), 422, "must be > 0")
    refused(
        api.patch(f"{SO}/SO-2001/lines/1", json={"requested_date": "2026-12-01T10:00:00"}),
        422,
        "no time zone",
    )
    refused(api.patch(f"{SO}/SO-2001/lines/2", json={"quantity": "1"}), 404, "SO-2001/2")
    refused(api.post(f"{SO}/SO-404/cancel"), 404, "no sales order 'SO-404'")
    refused(api.get(f"{SO}/SO-404"), 404, "SO-404")
    refused(api.post("/api/customers", json={"code": "CUST-ACME", "name": "x"}), 409, "exists")
    refused(api.post("/api/customers", json={"code": "A B", "name": "x"}), 422, "without spaces")
    # Nothing refused changed the order.
    (line,) = ok(api.get(f"{SO}/SO-2001"))["lines"]
    assert (line["quantity"], line["requested_date"]) == ("10", date(2026, 12, 1).isoformat())
