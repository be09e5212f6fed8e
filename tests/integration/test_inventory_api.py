"""The stock REST routes over the real plant service (SQLite): balances, reservations, and the
404 / 409 / 422 answers with the domain's message."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taktline_cloud.api import ApiContext, install_api
from taktline_cloud.live import LiveHub, ServiceGateway, ServiceWorker
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with Database(f"sqlite:///{tmp_path / 'cloud.db'}") as db:
        service = PlantService(db, clock=lambda: T0)
        service.load_master_data(PLANT)
        app = FastAPI()
        install_api(app)
        hub = LiveHub(max_queue=16)
        app.state.taktline = ApiContext(ServiceGateway(service, ServiceWorker(), hub), hub)
        with TestClient(app) as test_client:
            yield test_client


def housing(client: TestClient) -> dict[str, str]:
    response = client.get("/api/stock/balances", params={"item": "RM-HOUSING"})
    assert response.status_code == 200
    (row,) = response.json()
    return {k: row[k] for k in ("location", "on_hand", "reserved", "available")}


def test_reserve_consume_and_release_through_the_api(client: TestClient) -> None:
    assert housing(client) == {
        "location": "WH1/RAW",
        "on_hand": "6000",
        "reserved": "0",
        "available": "6000",
    }
    body = {"item": "RM-HOUSING", "location": "WH1/RAW", "demand": "WO-1001", "quantity": "1000"}
    created = client.post("/api/stock/reservations", json=body)
    assert created.status_code == 201
    reservation = created.json()
    assert {k: reservation[k] for k in ("id", "status", "open", "demand")} == {
        "id": 1,
        "status": "open",
        "open": "1000",
        "demand": "WO-1001",
    }
    assert housing(client)["available"] == "5000"

    too_much = client.post("/api/stock/reservations", json=body | {"quantity": "5000.5"})
    assert too_much.status_code == 409
    assert too_much.json()["detail"].startswith(
        "cannot reserve 5,000.5 of RM-HOUSING at WH1/RAW: 5,000 available"
    )

    consumed = client.post("/api/stock/reservations/1/consume", json={"quantity": "250"})
    assert consumed.status_code == 200
    assert (consumed.json()["open"], consumed.json()["consumed"]) == ("750", "250")
    assert housing(client) == {
        "location": "WH1/RAW",
        "on_hand": "5750",
        "reserved": "750",
        "available": "5000",
    }

    released = client.delete("/api/stock/reservations/1")
    assert released.status_code == 200
    assert (released.json()["status"], released.json()["released"]) == ("released", "750")
    assert housing(client)["available"] == "5750"
    again = client.delete("/api/stock/reservations/1")
    assert (again.status_code, again.json()) == (
        409,
        {"detail": "reservation 1 is already released"},
    )

    listed = client.get("/api/stock/reservations", params={"closed": "true"}).json()
    assert [(r["id"], r["status"]) for r in listed] == [(1, "released")]
    assert client.get("/api/stock/reservations").json() == []


def test_errors_name_what_was_wrong(client: TestClient) -> None:
    missing = client.delete("/api/stock/reservations/42")
    assert (missing.status_code, missing.json()) == (404, {"detail": "no reservation 42"})
    assert client.post("/api/stock/reservations/42/consume").status_code == 404

    unknown = client.post(
        "/api/stock/reservations",
        json={"item": "RM-HOUSING", "location": "WH1/RAW", "demand": "WO-7", "quantity": "1"},
    )
    assert (unknown.status_code, unknown.json()) == (422, {"detail": "no work order 'WO-7'"})
    negative = client.post(
        "/api/stock/reservations",
        json={"item": "RM-HOUSING", "location": "WH1/RAW", "demand": "WO-1001", "quantity": "-1"},
    )
    assert negative.status_code == 422  # refused by the schema before the domain
    no_item = client.get("/api/stock/balances", params={"item": "NOPE"})
    assert (no_item.status_code, no_item.json()) == (404, {"detail": "no item 'NOPE'"})


def test_the_routes_are_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/api/stock/reservations"]) == {"get", "post"}
    assert set(paths["/api/stock/reservations/{number}"]) == {"delete"}
    assert "post" in paths["/api/stock/reservations/{number}/consume"]
    assert "get" in paths["/api/stock/balances"]


def test_a_receipt_at_a_cost_moves_the_average(client: TestClient) -> None:
    body = {
        "item": "RM-HOUSING",
        "location": "WH1/RAW",
        "quantity": "2000",
        "unit_cost": "14.50",
        "reference": "PO-7",
    }
    received = client.post("/api/stock/receipts", json=body)
    assert received.status_code == 201
    assert {k: received.json()[k] for k in ("reason", "unit_cost", "value")} == {
        "reason": "receipt",
        "unit_cost": "14.5",
        "value": "29000",
    }
    (row,) = client.get("/api/stock/balances", params={"item": "RM-HOUSING"}).json()
    assert (row["on_hand"], row["unit_cost"], row["value"]) == ("8000", "13", "104000")
    wrong = client.post("/api/stock/receipts", json=body | {"location": "VIRTUAL/CUSTOMER"})
    assert (wrong.status_code, wrong.json()) == (
        422,
        {"detail": "'VIRTUAL/CUSTOMER' is not a store (an internal location)"},
    )
