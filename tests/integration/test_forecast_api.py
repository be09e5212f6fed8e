"""The demand forecast on SQLite and PostgreSQL: an item's sales history (by requested date)
read from storage, GET /api/items/{item}/forecast with its backtest against naive, and MRP
planning the forecast less what booked orders consume of it, pegged as forecast.

MRP by hand (week buckets from Monday 2026-11-23, aligned with the forecast's ISO weeks):
FG-100 sold a flat 700 a week for 20 weeks -> forecast 700 a week (method flat).
Orders: the demo's SO-1001/1 600 on 11-25 (week 11-23) and SO-2001/1 900 on 12-02 (week 11-30).

    week    forecast  orders  consumed  remaining -> demands planned
    11-23   700       600     600       100          SO-1001/1 600 + FC/FG-100/2026-11-23 100
    11-30   700       900     700       0            SO-2001/1 900 (the extra 200 is the order's)
    12-07   700       0       0         700          FC/FG-100/2026-12-07 700
    12-14   700       0       0         700          FC/FG-100/2026-12-14 700

FG-100: 120 on hand, lead 1 day = 1 week bucket, lot-for-lot -> planned orders of 580 (week
11-23), 900, 700 and 700; the orders' demand is never counted twice (1600 in week 11-30 would be
700 forecast + 900 order).
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
from taktline_cloud.errors import Invalid
from taktline_cloud.live import LiveHub, ServiceGateway, ServiceWorker
from taktline_cloud.masterdata import load_plant
from taktline_cloud.planning.buckets import Buckets
from taktline_cloud.planning.mrp import DemandKind, regenerate
from taktline_cloud.planning_runs import (
    REGENERATIVE,
    ForecastSettings,
    forecast_settings,
    planning_data,
    store_plan,
)
from taktline_cloud.sales.orders import NewLine
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database
from taktline_cloud.storage.forecasting import sales_by_requested_date
from tests.support import Clock

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)  # a Tuesday
WEEK0 = date(2026, 11, 23)  # its ISO week's Monday
WEEKS = 20
FIRST_WEEK = WEEK0 - timedelta(weeks=WEEKS)
FG = "FG-100"


@pytest.fixture
def service(db: Database) -> PlantService:
    plant = PlantService(db, clock=Clock(T0))
    plant.load_master_data(PLANT)
    return plant


@pytest.fixture
def client(service: PlantService, db: Database) -> Iterator[TestClient]:
    app = FastAPI()
    install_api(app)
    hub = LiveHub(max_queue=16)
    app.state.taktline = ApiContext(ServiceGateway(service, ServiceWorker(), hub), hub)
    app.state.historian = db
    with TestClient(app) as test_client:
        yield test_client


def book(db: Database, number: str, lines: list[tuple[str, Decimal, date]]) -> None:
    """A sales order through storage, as the sales service stores one."""
    with db.transaction() as tx:
        tx.insert_sales_order(
            number,
            "CUST-ACME",
            T0,
            [(i, item, quantity, due) for i, (item, quantity, due) in enumerate(lines, 1)],
        )


def weekly_history(db: Database, quantity: Any) -> None:
    """One shipped order a week for WEEKS weeks before WEEK0, due on the Wednesday of each
    week; `quantity(week)` gives each week's quantity (week 0 is the oldest)."""
    for week in range(WEEKS):
        due = FIRST_WEEK + timedelta(weeks=week, days=2)
        book(db, f"SO-H{week:02d}", [(FG, Decimal(quantity(week)), due)])
    with db.transaction() as tx:
        # Shipped and closed (no shipping service yet: closed as it will close them), so MRP
        # plans none of them again; as history they count all the same.
        tx.executor.execute(
            "UPDATE sales_order_lines SET is_open = ? WHERE order_number LIKE ?", (False, "SO-H%")
        )


def test_sales_history_is_read_by_requested_date(service: PlantService, db: Database) -> None:
    book(db, "SO-2", [(FG, Decimal("5"), date(2026, 11, 2)), ("RM-GASKET", Decimal(1), WEEK0)])
    book(db, "SO-3", [(FG, Decimal("2.5"), date(2026, 11, 2))])
    with db.transaction(write=False) as tx:
        everything = sales_by_requested_date(tx, FG)
        before = sales_by_requested_date(tx, FG, before=WEEK0)
        since = sales_by_requested_date(tx, FG, since=WEEK0)
    assert everything == [
        (date(2026, 11, 2), Decimal("5")),
        (date(2026, 11, 2), Decimal("2.5")),
        (date(2026, 11, 25), Decimal("600")),  # the demo's SO-1001/1
    ]
    assert before == everything[:2]
    assert since == everything[2:]


def test_the_endpoint_answers_history_forecast_and_backtest(
    service: PlantService, db: Database, client: TestClient
) -> None:
    weekly_history(db, lambda week: 100 + 10 * week)  # a steady trend: naive lags it
    response = client.get(
        f"/api/items/{FG}/forecast", params={"bucket": "week", "horizon": 4, "as_of": "2026-11-24"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["item"], body["bucket"], body["as_of"], body["method"]) == (
        FG,
        "week",
        "2026-11-24",
        "holt",
    )
    assert body["season_length"] == 52
    history = body["history"]
    assert len(history) == WEEKS
    assert history[0] == {"start": FIRST_WEEK.isoformat(), "quantity": "100"}
    assert history[-1] == {"start": "2026-11-16", "quantity": "290"}
    forecast = body["forecast"]
    assert [f["start"] for f in forecast] == [
        "2026-11-23",
        "2026-11-30",
        "2026-12-07",
        "2026-12-14",
    ]
    # The trend goes on (damped): each week above the last one sold, never below it.
    values = [Decimal(f["forecast"]) for f in forecast]
    assert Decimal(290) < values[0] <= values[1] <= values[2] <= values[3] < Decimal(340)
    # The demo's 600 in week 11-23 consumes that week's forecast whole; the others are open.
    first = forecast[0]
    assert (first["orders"], first["remaining"]) == ("600", "0.00")
    assert [(f["orders"], Decimal(f["remaining"])) for f in forecast[1:]] == [
        ("0", v) for v in values[1:]
    ]
    backtest = body["backtest"]
    assert (backtest["method"], backtest["baseline"], backtest["origins"], backtest["lead"]) == (
        "holt",
        "naive",
        10,
        1,
    )
    # Naive is always one step (10) behind a steady trend; the model follows it.
    assert Decimal(backtest["baseline_mae"]) == Decimal(10)
    assert Decimal(backtest["model_mae"]) < Decimal(10)
    assert Decimal(backtest["relative_mae"]) < 1
    assert Decimal(backtest["mase"]) < 1


def test_day_buckets_count_days_without_sales_as_zero(
    service: PlantService, db: Database, client: TestClient
) -> None:
    weekly_history(db, lambda week: 70)
    response = client.get(
        f"/api/items/{FG}/forecast", params={"bucket": "day", "horizon": 3, "as_of": "2026-11-24"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    history = body["history"]
    first_sale = FIRST_WEEK + timedelta(days=2)
    assert history[0] == {"start": first_sale.isoformat(), "quantity": "70"}
    assert history[-1] == {"start": "2026-11-23", "quantity": "0"}
    assert len(history) == (date(2026, 11, 24) - first_sale).days
    assert [f["start"] for f in body["forecast"]] == ["2026-11-24", "2026-11-25", "2026-11-26"]
    assert body["backtest"]["baseline"] in ("naive", "seasonal naive")


def test_errors(service: PlantService, db: Database, client: TestClient) -> None:
    url = f"/api/items/{FG}/forecast"
    unknown = client.get("/api/items/NOPE/forecast")
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "no item 'NOPE'"})
    for params in (
        {"bucket": "month"},
        {"horizon": 0},
        {"horizon": 10_000},
        {"as_of": "yesterday"},
    ):
        assert client.get(url, params=params).status_code == 422, params
    # No history at all, then three weeks: too little to forecast, and said so.
    none = client.get("/api/items/RM-GASKET/forecast", params={"as_of": "2026-11-24"})
    assert none.status_code == 409
    assert "has 0 week bucket(s) of sales history" in none.json()["detail"]
    for week in (1, 2, 3):
        book(db, f"SO-S{week}", [(FG, Decimal(5), WEEK0 - timedelta(weeks=week))])
    short = client.get(url, params={"as_of": "2026-11-24"})
    assert short.status_code == 409
    assert short.json()["detail"] == (
        "item 'FG-100' has 3 week bucket(s) of sales history before 2026-11-23;"
        " a forecast needs at least 4"
    )
    book(db, "SO-S4", [(FG, Decimal(5), WEEK0 - timedelta(weeks=4))])
    assert client.get(url, params={"as_of": "2026-11-24"}).status_code == 200
    assert {"/api/items/{item}/forecast"} <= set(client.get("/openapi.json").json()["paths"])


def test_the_plant_file_switches_forecasting_on_per_item(tmp_path: Path) -> None:
    assert forecast_settings(load_plant(PLANT)) == ForecastSettings()  # off by default
    raw = yaml.safe_load(PLANT.read_text(encoding="utf-8"))
    raw["items"][0]["planning"]["forecast"] = True
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert forecast_settings(load_plant(path)) == ForecastSettings(frozenset({FG}))


def test_mrp_plans_the_forecast_less_booked_orders(service: PlantService, db: Database) -> None:
    weekly_history(db, lambda week: 700)
    book(db, "SO-2001", [(FG, Decimal(900), date(2026, 12, 2))])
    buckets = Buckets(WEEK0, 7, 4)
    with db.transaction() as tx:
        model = tx.plant_model()
        assert model is not None
        plain = planning_data(tx, model, buckets, [])
        data = planning_data(tx, model, buckets, [], forecasting=ForecastSettings(frozenset({FG})))
        # Off (the default): the orders only, exactly as before.
        assert {r.kind for r in plain.demands[FG]} == {DemandKind.SALES}
        demands = sorted((r.bucket, r.id, r.quantity, r.kind) for r in data.demands[FG])
        assert demands == [
            (1, "FC/FG-100/2026-11-23", Decimal("100.00"), DemandKind.FORECAST),
            (1, "SO-1001/1", Decimal(600), DemandKind.SALES),
            (2, "SO-2001/1", Decimal(900), DemandKind.SALES),
            (3, "FC/FG-100/2026-12-07", Decimal("700.00"), DemandKind.FORECAST),
            (4, "FC/FG-100/2026-12-14", Decimal("700.00"), DemandKind.FORECAST),
        ]
        plan = regenerate(data)
        stored = store_plan(tx, plan, data, kind=REGENERATIVE, started_at=T0, started_clock=0.0)
    record = plan.records[FG]
    assert [(o.due, o.quantity) for o in record.planned_orders] == [
        (1, Decimal(580)),
        (2, Decimal(900)),
        (3, Decimal(700)),
        (4, Decimal(700)),
    ]
    # Every demand is served in full, the forecast ones pegged as forecast.
    served: dict[str, Decimal] = {}
    for peg in record.pegs:
        served[peg.demand] = served.get(peg.demand, Decimal(0)) + peg.quantity
    assert served == {
        "SO-1001/1": Decimal(600),
        "FC/FG-100/2026-11-23": Decimal(100),
        "SO-2001/1": Decimal(900),
        "FC/FG-100/2026-12-07": Decimal(700),
        "FC/FG-100/2026-12-14": Decimal(700),
    }
    assert stored.row.planned_orders >= 4
    last = record.planned_orders[-1].id
    pegging = service.mrp_pegging(last, FG)
    assert [
        (p.demand, p.quantity, [(s.item, s.demand, s.kind) for s in p.serves]) for p in pegging.pegs
    ] == [("FC/FG-100/2026-12-14", Decimal(700), [(FG, "FC/FG-100/2026-12-14", "forecast")])]


def test_forecasting_needs_day_or_week_buckets(service: PlantService, db: Database) -> None:
    weekly_history(db, lambda week: 700)
    with db.transaction() as tx:
        model = tx.plant_model()
        assert model is not None
        with pytest.raises(Invalid, match="day or week MRP buckets, not 3 days"):
            planning_data(
                tx, model, Buckets(WEEK0, 3, 4), [], forecasting=ForecastSettings(frozenset({FG}))
            )


def test_an_mrp_run_plans_the_forecast_of_items_switched_on(db: Database, tmp_path: Path) -> None:
    """End to end through the service: plant.yaml's switch reaches `run_mrp`."""
    raw = yaml.safe_load(PLANT.read_text(encoding="utf-8"))
    raw["items"][0]["planning"]["forecast"] = True
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    service = PlantService(db, clock=Clock(T0))
    service.load_master_data(path)
    weekly_history(db, lambda week: 700)
    service.run_mrp()
    kinds = {
        serve.kind
        for order in service.mrp_planned_orders(FG)
        for peg in service.mrp_pegging(order.id, FG).pegs
        for serve in peg.serves
    }
    assert "forecast" in kinds

    service.load_master_data(PLANT)  # switched off again: the orders alone
    service.run_mrp()
    kinds = {
        serve.kind
        for order in service.mrp_planned_orders(FG)
        for peg in service.mrp_pegging(order.id, FG).pegs
        for serve in peg.serves
    }
    assert "forecast" not in kinds


def test_a_new_order_takes_its_share_of_the_forecast_in_a_net_change_run(
    db: Database, tmp_path: Path
) -> None:
    """A sales order booked after the run consumes the forecast by net change, as the next
    regenerative run would: its bucket's demand is the larger of forecast and orders, not
    both added up (the forecast is not refitted on a net change)."""
    raw = yaml.safe_load(PLANT.read_text(encoding="utf-8"))
    raw["items"][0]["planning"]["forecast"] = True
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    service = PlantService(db, clock=Clock(T0))
    service.load_master_data(path)
    weekly_history(db, lambda week: 700)
    service.run_mrp()
    before = service._mrp_last
    assert before is not None
    assert FG in before.forecasts

    def fg_demands(data: Any) -> dict[str, Decimal]:
        return {r.id: r.quantity for r in data.demands[FG]}

    forecast_before = {k: q for k, q in fg_demands(before.data).items() if k.startswith("FC/")}
    assert forecast_before  # the history gives a forecast to consume
    day = date(2026, 12, 2)  # a Wednesday: day buckets, and the history sold on Wednesdays
    service.create_sales_order("CUST-ACME", [NewLine(FG, Decimal(250), day)], "SO-3001")

    after = service._mrp_last
    assert after is not None
    assert after.row.kind == "net-change"
    netted = fg_demands(after.data)
    assert netted["SO-3001/1"] == Decimal(250)
    forecast_after = {k: q for k, q in netted.items() if k.startswith("FC/")}
    # The order took 250 of the forecast it fell in: total FG demand grew by nothing.
    assert sum(forecast_before.values()) - sum(forecast_after.values()) == Decimal(250)
    assert sum(netted.values()) == sum(fg_demands(before.data).values())

    # And exactly what a regenerative run plans from the same data.
    service.run_mrp()
    regenerated = service._mrp_last
    assert regenerated is not None
    assert regenerated.row.kind == "regenerative"
    assert fg_demands(regenerated.data) == netted
