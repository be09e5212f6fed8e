"""REST API over a fake service: routes, status codes, domain error mapping, OpenAPI, websocket."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taktline_cloud.api import ApiContext, install_api
from taktline_cloud.errors import Conflict, Invalid, NotFound, StorageError
from taktline_cloud.events import WORK_ORDER_UPDATED, Event
from taktline_cloud.live import LiveHub, ServiceGateway, ServiceWorker
from taktline_cloud.readmodels import (
    Dashboard,
    LedgerRow,
    MachineRow,
    NodeRow,
    PlantRow,
    PromiseRow,
    SalesOrderLineRow,
    StockRow,
    WorkOrderRow,
)

AT = datetime(2026, 11, 24, 19, 40, 0, 123000, tzinfo=UTC)


def work_order(number: str = "WO-1001", status: str = "created") -> WorkOrderRow:
    return WorkOrderRow(
        number=number,
        item="FG-100",
        line="LINE-1",
        status=status,
        quantity=Decimal(1000),
        good=Decimal(0),
        scrap=Decimal(0),
        progress=Decimal(0),
        rate_per_hour=None,
        rate_basis=None,
        projected_completion=None,
        started_at=None,
        completed_at=None,
    )


class FakePlant:
    """Just enough of PlantService for the routes; records the commands it got."""

    def __init__(self) -> None:
        self.orders: dict[str, WorkOrderRow] = {"WO-1001": work_order()}
        self.calls: list[tuple[str, Any]] = []
        self.fail_next: Exception | None = None

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error

    def machines(self) -> list[MachineRow]:
        return [
            MachineRow(
                code="M1", name="Press", line="LINE-1", state="running", online=True,
                good_count=Decimal(123), scrap_count=Decimal(2), cycle_time_ms=Decimal(1580),
                temperature=Decimal("62.1"), updated_at=AT,
            )
        ]

    def nodes(self) -> list[NodeRow]:
        return [NodeRow(edge_node="GW-1", device=None, online=True, since=AT)]

    def work_orders(self) -> list[WorkOrderRow]:
        return list(self.orders.values())

    def work_order(self, number: str) -> WorkOrderRow:
        self._maybe_fail()
        if number not in self.orders:
            raise NotFound(f"work order {number} does not exist")
        return self.orders[number]

    def create_work_order(
        self, item: str, quantity: Decimal, line: str, number: str | None = None
    ) -> tuple[WorkOrderRow, list[Event]]:
        self._maybe_fail()
        self.calls.append(("create", (item, quantity, line, number)))
        if item != "FG-100":
            raise Invalid(f"unknown item {item}")
        row = work_order(number or "WO-1002")
        if row.number in self.orders:
            raise Conflict(f"work order {row.number} already exists")
        self.orders[row.number] = row
        return row, [Event(WORK_ORDER_UPDATED, row.to_json(), AT)]

    def _move(self, number: str, status: str, allowed: str) -> tuple[WorkOrderRow, list[Event]]:
        self._maybe_fail()
        current = self.work_order(number)
        if current.status != allowed:
            raise Conflict(f"work order {number} is {current.status}, not {allowed}")
        row = work_order(number, status)
        self.orders[number] = row
        return row, [Event(WORK_ORDER_UPDATED, row.to_json(), AT)]

    def release_work_order(self, number: str) -> tuple[WorkOrderRow, list[Event]]:
        return self._move(number, "released", "created")

    def start_work_order(self, number: str) -> tuple[WorkOrderRow, list[Event]]:
        return self._move(number, "running", "released")

    def complete_work_order(self, number: str) -> tuple[WorkOrderRow, list[Event]]:
        return self._move(number, "completed", "running")

    def stock(self) -> list[StockRow]:
        return [StockRow(item="RM-SEALANT", name="Sealant", location="WH1/RAW",
                         on_hand=Decimal("14997.5"), uom="ml")]

    def ledger(self, item: str | None = None, limit: int = 200) -> list[LedgerRow]:
        self.calls.append(("ledger", (item, limit)))
        return [LedgerRow(id=1, at=AT, item="RM-SEALANT", from_location="WH1/RAW",
                          to_location="VIRTUAL/PRODUCTION", quantity=Decimal("2.5"),
                          reason="backflush", reference="WO-1001")]

    def sales_orders(self) -> list[SalesOrderLineRow]:
        return [SalesOrderLineRow(order="SO-1001", customer="CUST-ACME", line=1, item="FG-100",
                                  quantity=Decimal(600), requested_date=date(2026, 11, 25),
                                  promised_at=AT, promise_reason="stock + WO-1001",
                                  at_risk=False)]

    def promise_history(self, order: str, line: int) -> list[PromiseRow]:
        if order != "SO-1001" or line != 1:
            raise NotFound(f"sales order line {order}/{line} does not exist")
        return [PromiseRow(order=order, line=line, promised_at=AT, reason="stock", at=AT)]

    def dashboard(self) -> Dashboard:
        return Dashboard(
            plant=PlantRow(code="PLANT-1", name="Demo Plant Suzhou"),
            generated_at=AT,
            machines=self.machines(),
            work_orders=self.work_orders(),
            stock=self.stock(),
            sales_orders=self.sales_orders(),
        )


class FakeHost:
    connected = True

    def online_nodes(self) -> dict[str, list[str]]:
        return {"GW-1": ["M1", "M2"]}


@pytest.fixture
def plant() -> FakePlant:
    return FakePlant()


@pytest.fixture
def client(plant: FakePlant) -> Iterator[TestClient]:
    app = FastAPI()
    install_api(app)
    hub = LiveHub(max_queue=16)
    app.state.taktline = ApiContext(ServiceGateway(plant, ServiceWorker(), hub), hub, FakeHost())  # type: ignore[arg-type]
    with TestClient(app) as test_client:
        yield test_client


def test_health_says_ok_with_the_online_nodes(client: TestClient) -> None:
    body = client.get("/api/health").json()
    assert body == {
        "status": "ok", "mqtt_connected": True, "edge_nodes": {"GW-1": ["M1", "M2"]},
        "live_clients": 0,
    }


def test_reads_return_the_read_models_with_exact_decimals(client: TestClient) -> None:
    machines = client.get("/api/machines").json()
    assert machines[0]["temperature"] == "62.1"
    assert machines[0]["updated_at"] == "2026-11-24T19:40:00.123Z"
    assert client.get("/api/stock").json()[0]["on_hand"] == "14997.5"
    assert client.get("/api/nodes").json()[0]["edge_node"] == "GW-1"
    assert client.get("/api/sales-orders").json()[0]["requested_date"] == "2026-11-25"
    assert client.get("/api/dashboard").json()["plant"]["code"] == "PLANT-1"
    assert client.get("/api/work-orders").json()[0]["number"] == "WO-1001"
    assert client.get("/api/work-orders/WO-1001").json()["status"] == "created"
    promises = client.get("/api/sales-orders/SO-1001/lines/1/promises").json()
    assert promises[0]["reason"] == "stock"


def test_ledger_passes_item_and_limit(client: TestClient, plant: FakePlant) -> None:
    response = client.get("/api/stock/ledger", params={"item": "RM-SEALANT", "limit": 5})
    assert response.status_code == 200
    assert response.json()[0]["quantity"] == "2.5"
    assert plant.calls[-1] == ("ledger", ("RM-SEALANT", 5))
    assert client.get("/api/stock/ledger", params={"limit": 0}).status_code == 422


def test_create_work_order_is_201_and_quantity_stays_exact(
    client: TestClient, plant: FakePlant
) -> None:
    response = client.post(
        "/api/work-orders",
        json={"item": "FG-100", "quantity": "0.1", "line": "LINE-1", "number": "WO-2000"},
    )
    assert response.status_code == 201
    assert response.json()["number"] == "WO-2000"
    assert plant.calls[-1] == ("create", ("FG-100", Decimal("0.1"), "LINE-1", "WO-2000"))


def test_release_start_complete_walk_the_states(client: TestClient) -> None:
    for step, status in (("release", "released"), ("start", "running"), ("complete", "completed")):
        response = client.post(f"/api/work-orders/WO-1001/{step}")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status


@pytest.mark.parametrize(
    "case",
    [
        ("get", "/api/work-orders/WO-9", None, 404, "work order WO-9 does not exist"),
        ("post", "/api/work-orders/WO-9/release", None, 404, "work order WO-9 does not exist"),
        ("post", "/api/work-orders/WO-1001/start", None, 409, "is created, not released"),
        ("post", "/api/work-orders", {"item": "NOPE", "quantity": "5", "line": "LINE-1"}, 422,
         "unknown item NOPE"),
        ("post", "/api/work-orders",
         {"item": "FG-100", "quantity": "5", "line": "LINE-1", "number": "WO-1001"}, 409,
         "WO-1001 already exists"),
        ("get", "/api/sales-orders/SO-1/lines/1/promises", None, 404, "SO-1/1 does not exist"),
    ],
)
def test_domain_errors_map_to_http_with_a_clear_detail(
    client: TestClient, case: tuple[str, str, Any, int, str]
) -> None:
    method, path, body, status, detail = case
    response = client.request(method, path, json=body)
    assert response.status_code == status
    assert detail in response.json()["detail"]


def test_database_failure_is_503(client: TestClient, plant: FakePlant) -> None:
    plant.fail_next = StorageError("database is locked")
    response = client.get("/api/work-orders/WO-1001")
    assert response.status_code == 503
    assert response.json() == {"detail": "database is locked"}


@pytest.mark.parametrize(
    "body",
    [
        {"item": "FG-100", "quantity": "0", "line": "LINE-1"},
        {"item": "FG-100", "quantity": "-3", "line": "LINE-1"},
        {"item": "FG-100", "quantity": "NaN", "line": "LINE-1"},
        {"item": "FG-100", "quantity": "lots", "line": "LINE-1"},
        {"item": "", "quantity": "1", "line": "LINE-1"},
        {"item": "FG-100", "line": "LINE-1"},
        {"item": "FG-100", "quantity": "1", "line": "LINE-1", "colour": "red"},
    ],
)
def test_bad_work_order_bodies_are_refused_before_the_domain(
    client: TestClient, plant: FakePlant, body: dict[str, str]
) -> None:
    response = client.post("/api/work-orders", json=body)
    assert response.status_code == 422
    assert plant.calls == []


def test_openapi_lists_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/health", "/api/machines", "/api/nodes", "/api/work-orders",
        "/api/work-orders/{number}", "/api/work-orders/{number}/release",
        "/api/work-orders/{number}/start", "/api/work-orders/{number}/complete",
        "/api/stock", "/api/stock/ledger", "/api/sales-orders",
        "/api/sales-orders/{order}/lines/{line}/promises", "/api/dashboard",
    ):
        assert path in paths, path
    assert "201" in paths["/api/work-orders"]["post"]["responses"]


def test_websocket_sends_a_snapshot_first_then_command_events(client: TestClient) -> None:
    with client.websocket_connect("/ws/live") as websocket:
        snapshot = websocket.receive_json()
        assert snapshot["type"] == "snapshot"
        assert snapshot["data"]["plant"] == {"code": "PLANT-1", "name": "Demo Plant Suzhou"}
        assert snapshot["at"].endswith("Z")
        assert client.get("/api/health").json()["live_clients"] == 1
        client.post("/api/work-orders/WO-1001/release")
        event = websocket.receive_json()
        assert event["type"] == WORK_ORDER_UPDATED
        assert event["data"]["status"] == "released"
