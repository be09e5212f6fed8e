"""MRP on the demo plant's live data, on SQLite and PostgreSQL: planned orders, pegging to the
sales order, action messages, a re-run replacing the result, net change after a posted count,
the planner lock, and the REST shapes and errors.

The demo plant (config/plant.yaml) by hand, daily buckets from T0's date (bucket 1 = 2026-11-24,
bucket 0 = past due, reported as 2026-11-23), everything available at WH1:

* FG-100 (make, lead 1 day, lot-for-lot): 120 on hand, SO-1001/1 needs 600 on 11-25 (bucket 2)
  -> short 480 in bucket 2: PLN/FG-100/2 480, released in bucket 1 (11-24).
  Components are needed at that release (bucket 1): 480 x factor.
* RM-HOUSING (lead 5, safety 7000, fixed 2000): 6000 < 7000 already in bucket 0 -> short 1000,
  one lot PLN/RM-HOUSING/0 2000 (past due); bucket 1: 8000 - 480 = 7520 >= 7000.
* RM-SCREW-M6 (lead 3, safety 24000, min 10000 multiple 5000): 25000 - 4 x 480 = 23080 in
  bucket 1, short 920 -> 10000, PLN/RM-SCREW-M6/1, released before the start: past due.
* RM-GASKET (lead 7, scrap 0.02): 6000 - 489.6 >= 0: no order.
* RM-SEALANT (lead 2, safety 14000, 3 periods of supply, scrap 0.1): 15000 - 480 x 2.5 x 1.1
  = 13680 in bucket 1, short 320 and nothing more in buckets 2-3 -> PLN/RM-SEALANT/1 320, past due.

That is the plan before the demo creates its work order: a created work order is supply, so the
plant is loaded without plant.yaml's `work_orders` (WO-1001, 1000 FG-100, would cover the sales
order; test_mrp_supply.py plans with it).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taktline_cloud.api import ApiContext, install_api
from taktline_cloud.errors import Conflict, Invalid, MasterDataError, NotFound
from taktline_cloud.historian.samples import Sample
from taktline_cloud.live import LiveHub, ServiceGateway, ServiceWorker
from taktline_cloud.masterdata import load_plant
from taktline_cloud.planning_runs import PLANNER_LOCK
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database
from taktline_contract.metrics import GOOD_COUNT
from tests.support import Clock

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
TODAY, PAST_DUE = date(2026, 11, 24), date(2026, 11, 23)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """plant.yaml without its seeded work order (see the module docstring)."""
    raw = yaml.safe_load(PLANT.read_text(encoding="utf-8"))
    raw.pop("work_orders", None)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture
def service(db: Database, clock: Clock, demo: Path) -> PlantService:
    plant = PlantService(db, clock=clock)
    plant.load_master_data(demo)
    return plant


@pytest.fixture
def client(service: PlantService) -> Iterator[TestClient]:
    app = FastAPI()
    install_api(app)
    hub = LiveHub(max_queue=16)
    app.state.taktline = ApiContext(ServiceGateway(service, ServiceWorker(), hub), hub)
    with TestClient(app) as test_client:
        yield test_client


def orders(service: PlantService, **filters: str) -> list[tuple[str, str, str, Any, Any, Any]]:
    return [
        (o.id, o.kind, str(o.quantity), o.due_date, o.release_date, o.past_due)
        for o in service.mrp_planned_orders(**filters)
    ]


def messages(service: PlantService) -> list[tuple[str, str, str, date, date | None, str]]:
    return [
        (m.kind, m.item, m.order, m.bucket_date, m.to_date, str(m.quantity))
        for m in service.mrp_exceptions()
    ]


def pegs(service: PlantService, supply: str, item: str | None = None) -> list[tuple[Any, ...]]:
    pegging = service.mrp_pegging(supply, item)
    return [
        (p.demand, str(p.quantity), [(s.item, s.demand, s.kind) for s in p.serves])
        for p in pegging.pegs
    ]


DEMO_ORDERS = [
    ("PLN/FG-100/2", "make", "480", date(2026, 11, 25), TODAY, False),
    ("PLN/RM-HOUSING/0", "buy", "2000", PAST_DUE, PAST_DUE, True),
    ("PLN/RM-SCREW-M6/1", "buy", "10000", TODAY, PAST_DUE, True),
    ("PLN/RM-SEALANT/1", "buy", "320", TODAY, PAST_DUE, True),
]
SALES = ("FG-100", "SO-1001/1", "sales")


def test_the_demo_plant_is_planned_end_to_end(service: PlantService) -> None:
    run, events = service.run_mrp()
    assert [(e.type, e.data["run"]["id"]) for e in events] == [("mrp.run.finished", 1)]
    assert (run.id, run.kind, run.plan_start, run.bucket_days, run.bucket_count) == (
        1,
        "regenerative",
        TODAY,
        1,
        28,
    )
    assert (run.items, run.items_planned, run.planned_orders, run.exceptions) == (5, 5, 4, 3)
    assert run.started_at == T0
    assert run.finished_at >= run.started_at
    assert run.duration_ms >= 0
    assert service.mrp_latest_run() == run

    assert orders(service) == DEMO_ORDERS
    assert orders(service, kind="make") == DEMO_ORDERS[:1]
    assert orders(service, item="RM-SCREW-M6", kind="buy") == DEMO_ORDERS[2:3]
    assert orders(service, item="RM-GASKET") == []
    assert messages(service) == [
        ("past-due", "RM-HOUSING", "PLN/RM-HOUSING/0", PAST_DUE, None, "2000"),
        ("past-due", "RM-SCREW-M6", "PLN/RM-SCREW-M6/1", TODAY, None, "10000"),
        ("past-due", "RM-SEALANT", "PLN/RM-SEALANT/1", TODAY, None, "320"),
    ]


def test_pegging_traces_supplies_up_the_bom_to_the_sales_order(service: PlantService) -> None:
    service.run_mrp()
    assert pegs(service, "PLN/FG-100/2") == [("SO-1001/1", "480", [SALES])]
    assert pegs(service, "on-hand", "FG-100") == [("SO-1001/1", "120", [SALES])]
    # Screws on hand serve the FG order (so the sales order) first, then safety stock; the
    # new screw order only tops up safety stock (its lot-size excess is unpegged).
    assert pegs(service, "on-hand", "RM-SCREW-M6") == [
        ("PLN/FG-100/2", "1920", [SALES]),
        ("safety-stock", "23080", [("RM-SCREW-M6", "safety-stock", "safety-stock")]),
    ]
    assert pegs(service, "PLN/RM-SCREW-M6/1") == [
        ("safety-stock", "920", [("RM-SCREW-M6", "safety-stock", "safety-stock")])
    ]
    assert pegs(service, "on-hand", "RM-SEALANT")[0] == ("PLN/FG-100/2", "1320", [SALES])

    with pytest.raises(Invalid, match="'on-hand' is a supply of FG-100, RM-GASKET"):
        service.mrp_pegging("on-hand")
    with pytest.raises(NotFound, match="supply 'PLN/NOPE/1' serves nothing in MRP run 1"):
        service.mrp_pegging("PLN/NOPE/1")
    with pytest.raises(NotFound, match="no item 'NOPE'"):
        service.mrp_pegging("on-hand", "NOPE")


def test_nothing_to_read_before_the_first_run(service: PlantService) -> None:
    for read in (
        service.mrp_latest_run,
        service.mrp_planned_orders,
        service.mrp_exceptions,
        lambda: service.mrp_pegging("PLN/FG-100/2"),
    ):
        with pytest.raises(NotFound, match="no MRP run yet"):
            read()
    with pytest.raises(Invalid, match="kind must be make or buy, got 'sell'"):
        service.mrp_planned_orders(kind="sell")


def test_a_rerun_replaces_the_result(service: PlantService) -> None:
    service.run_mrp()
    # 3000 housings received: 9000 on hand covers 480 and the 7000 safety stock.
    service.receive("RM-HOUSING", "WH1/RAW", Decimal(3000), Decimal("12.50"), "PO-1")
    run, _ = service.run_mrp()
    assert (run.id, run.planned_orders, run.exceptions) == (2, 3, 2)
    assert service.mrp_latest_run().id == 2
    assert orders(service) == [DEMO_ORDERS[0], *DEMO_ORDERS[2:]]
    assert [m.order for m in service.mrp_exceptions()] == [
        "PLN/RM-SCREW-M6/1",
        "PLN/RM-SEALANT/1",
    ]
    with pytest.raises(NotFound, match="supply 'PLN/RM-HOUSING/0' serves nothing in MRP run 2"):
        service.mrp_pegging("PLN/RM-HOUSING/0")
    assert pegs(service, "on-hand", "RM-HOUSING") == [
        ("PLN/FG-100/2", "480", [SALES]),
        ("safety-stock", "7000", [("RM-HOUSING", "safety-stock", "safety-stock")]),
    ]


def test_a_running_work_order_is_a_receipt_and_a_count_replans_by_net_change(
    service: PlantService, clock: Clock
) -> None:
    service.create_work_order("FG-100", Decimal(1000), "LINE-1", "WO-1001")
    service.release_work_order("WO-1001")
    service.start_work_order("WO-1001")
    run, _ = service.run_mrp()
    # WO-1001's 1000 at the line's 2160/h is due today; the sales order needs it tomorrow: no
    # FG order. Its components are demand today: housings 1000 (6000 on hand, 7000 safety: the
    # past-due lot of 2000 as before), screws 4000 (25000 - 4000 < 24000 safety: 10000),
    # gaskets 1020 (no order), sealant 1000 x 2.5 x 1.1 = 2750 (15000 - 2750 is 1750 short).
    assert orders(service) == [
        DEMO_ORDERS[1],
        DEMO_ORDERS[2],
        ("PLN/RM-SEALANT/1", "buy", "1750", TODAY, PAST_DUE, True),
    ]
    # On hand serves the work order first (first in, first out; safety stock last).
    assert pegs(service, "on-hand", "RM-SEALANT")[0] == (
        "WO-1001/RM-SEALANT",
        "2750",
        [("RM-SEALANT", "WO-1001/RM-SEALANT", "work-order")],
    )
    assert pegs(service, "PLN/RM-SEALANT/1") == [
        ("safety-stock", "1750", [("RM-SEALANT", "safety-stock", "safety-stock")])
    ]
    assert messages(service)[0] == (
        "defer",
        "FG-100",
        "WO-1001",
        TODAY,
        date(2026, 11, 25),
        "1000",
    )
    assert pegs(service, "WO-1001") == [("SO-1001/1", "480", [SALES])]

    clock.now = T0 + timedelta(seconds=60)
    service.record_samples(
        [
            Sample("M3", GOOD_COUNT, T0 + timedelta(seconds=1), Decimal(0)),
            Sample("M3", GOOD_COUNT, T0 + timedelta(seconds=60), Decimal(10)),
        ]
    )

    latest = service.mrp_latest_run()
    assert (latest.id, latest.kind) == (run.id + 1, "net-change")
    # 10 made: FG 130 on hand, WO-1001 990 to go; 10 housings used: 5990 on hand serve the
    # order's remaining 990 first, then 5000 of the 7000 safety stock: the lot of 2000 the rest.
    assert pegs(service, "on-hand", "FG-100") == [("SO-1001/1", "130", [SALES])]
    assert pegs(service, "WO-1001") == [("SO-1001/1", "470", [SALES])]
    assert pegs(service, "PLN/RM-HOUSING/0") == [
        ("safety-stock", "2000", [("RM-HOUSING", "safety-stock", "safety-stock")])
    ]
    net = (orders(service), messages(service))
    regenerated, _ = service.run_mrp()
    assert regenerated.kind == "regenerative"
    assert (orders(service), messages(service)) == net


def test_planning_data_reloads_idempotently_and_follows_the_file(
    service: PlantService, tmp_path: Path, demo: Path
) -> None:
    service.load_master_data(demo)
    service.run_mrp()
    assert orders(service) == DEMO_ORDERS

    raw = yaml.safe_load(demo.read_text(encoding="utf-8"))
    housing = next(i for i in raw["items"] if i["sku"] == "RM-HOUSING")
    housing["planning"] = {"lead_time_days": 5, "safety_stock": "6500"}  # lot-for-lot
    raw["planning"] = {"bucket": "week", "horizon_days": 30}
    changed = tmp_path / "plant.yaml"
    changed.write_text(yaml.safe_dump(raw), encoding="utf-8")
    service.load_master_data(changed)
    run, _ = service.run_mrp()
    assert (run.bucket_days, run.bucket_count) == (7, 5)
    # Weekly: the sales order is in week 1, FG-100's 1-day lead is a week: released past due.
    # Housing: 6000 < 6500 in the past-due bucket, lot-for-lot 500; then 480 more in bucket 0
    # (the FG order's release) -> one order of 980.
    by_id = {o.id: (str(o.quantity), o.past_due) for o in service.mrp_planned_orders()}
    assert by_id["PLN/FG-100/1"] == ("480", True)
    assert by_id["PLN/RM-HOUSING/0"] == ("980", True)


@pytest.mark.postgres
def test_a_second_planner_gets_a_conflict_while_one_runs(
    postgres_dsn: str, clock: Clock, demo: Path
) -> None:
    with Database(postgres_dsn) as db:
        service = PlantService(db, clock=clock)
        service.load_master_data(demo)
        with psycopg.connect(postgres_dsn, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (PLANNER_LOCK,))
            with pytest.raises(Conflict, match="an MRP run is in progress"):
                service.run_mrp()
            other.execute("SELECT pg_advisory_unlock(%s)", (PLANNER_LOCK,))
        run, _ = service.run_mrp()
        assert run.id >= 1


def test_the_rest_api_runs_and_reads_the_plan(client: TestClient) -> None:
    missing = client.get("/api/mrp/runs/latest")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no MRP run yet: POST /api/mrp/runs to plan"}

    created = client.post("/api/mrp/runs")
    assert created.status_code == 201
    run = created.json()
    assert {k: run[k] for k in ("id", "kind", "plan_start", "planned_orders", "exceptions")} == {
        "id": 1,
        "kind": "regenerative",
        "plan_start": "2026-11-24",
        "planned_orders": 4,
        "exceptions": 3,
    }
    assert run["started_at"] == "2026-11-24T08:00:00.000Z"
    assert client.get("/api/mrp/runs/latest").json() == run

    buy = client.get("/api/mrp/planned-orders", params={"kind": "buy", "item": "RM-HOUSING"})
    assert buy.json() == [
        {
            "id": "PLN/RM-HOUSING/0",
            "item": "RM-HOUSING",
            "kind": "buy",
            "quantity": "2000",
            "due_date": "2026-11-23",
            "release_date": "2026-11-23",
            "past_due": True,
        }
    ]
    assert client.get("/api/mrp/exceptions").json()[0] == {
        "kind": "past-due",
        "item": "RM-HOUSING",
        "order": "PLN/RM-HOUSING/0",
        "bucket_date": "2026-11-23",
        "to_date": None,
        "quantity": "2000",
    }
    pegging = client.get("/api/mrp/pegging", params={"supply": "PLN/FG-100/2"})
    assert pegging.json() == {
        "run": 1,
        "item": "FG-100",
        "supply": "PLN/FG-100/2",
        "pegs": [
            {
                "item": "FG-100",
                "demand": "SO-1001/1",
                "quantity": "480",
                "serves": [{"item": "FG-100", "demand": "SO-1001/1", "kind": "sales"}],
            }
        ],
    }

    bad_kind = client.get("/api/mrp/planned-orders", params={"kind": "sell"})
    assert bad_kind.status_code == 422
    no_item = client.get("/api/mrp/exceptions", params={"item": "NOPE"})
    assert (no_item.status_code, no_item.json()) == (404, {"detail": "no item 'NOPE'"})
    ambiguous = client.get("/api/mrp/pegging", params={"supply": "on-hand"})
    assert ambiguous.status_code == 422
    assert ambiguous.json()["detail"].endswith(": name the item")
    assert client.get("/api/mrp/pegging").status_code == 422  # supply is required
    assert client.get("/api/mrp/pegging", params={"supply": "WO-9"}).status_code == 404

    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/api/mrp/runs"]) == {"post"}
    for path in ("/api/mrp/runs/latest", "/api/mrp/planned-orders", "/api/mrp/exceptions"):
        assert "get" in paths[path]
    schema = paths["/api/mrp/pegging"]["get"]["responses"]["200"]["content"]
    assert schema["application/json"]["schema"] == {"$ref": "#/components/schemas/PeggingRow"}


def _plant_with(tmp_path: Path, change: Any) -> Path:
    raw = yaml.safe_load(PLANT.read_text(encoding="utf-8"))
    change(raw)
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("planning", "message"),
    [
        ({"lot_size": {"rule": "fixed"}}, "rule fixed needs quantity"),
        ({"lot_size": {"rule": "lot-for-lot", "quantity": "5"}}, "rule lot-for-lot takes no"),
        ({"lot_size": {"rule": "min-multiple"}}, "rule min-multiple needs minimum and/or"),
        ({"lot_size": {"rule": "biggest"}}, "items[1].planning.lot_size.rule"),
        ({"safety_stock": "-1"}, "items[1].planning.safety_stock"),
        ({"safety_stock": 2.5}, "write decimals as strings"),
        ({"lead_time_days": -1}, "items[1].planning.lead_time_days"),
        ({"source": "make"}, "raw item 'RM-HOUSING' cannot be made (buy)"),
    ],
)
def test_bad_planning_data_names_the_field(
    tmp_path: Path, planning: dict[str, Any], message: str
) -> None:
    def change(raw: dict[str, Any]) -> None:
        raw["items"][1]["planning"] = planning

    with pytest.raises(MasterDataError) as caught:
        load_plant(_plant_with(tmp_path, change))
    assert message in str(caught.value)


def test_bom_scrap_is_a_fraction_written_as_a_string(tmp_path: Path) -> None:
    def change(raw: dict[str, Any]) -> None:
        raw["boms"]["FG-100"][0]["scrap"] = 0.1

    with pytest.raises(MasterDataError, match=r"boms.FG-100\[0\].scrap: .*strings"):
        load_plant(_plant_with(tmp_path, change))


def test_stock_reserved_for_the_sales_line_is_not_counted_twice(service: PlantService) -> None:
    # 100 of the 120 finished goods held for SO-1001/1: 20 available, the line needs 500 more.
    service.reserve("FG-100", "WH1/FG", "SO-1001/1", Decimal(100))
    service.run_mrp()
    assert orders(service, item="FG-100") == DEMO_ORDERS[:1]
    assert pegs(service, "on-hand", "FG-100") == [("SO-1001/1", "20", [SALES])]
