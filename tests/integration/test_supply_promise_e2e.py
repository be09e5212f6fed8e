"""Supply and promise end to end: the shop floor and a supplier move a customer's promise.

Real simulated PLCs over Modbus TCP, the real edge agent, a private Mosquitto and the real cloud
(service, Sparkplug host, REST) on SQLite and on PostgreSQL, with a plant file of this test's
own (round the clock, no shift calendar). SO-1001 wants far more pump housings than finished
stock and the running WO-1001 will give, so its promise is capable-to-promise: made on LINE-1
after WO-1001, at the line's *measured* rate, once the cast housings of PO-000001 are there
(and MRP pegs PO-000001 to SO-1001, through FG-100's planned order).

(a) The press (M1, the bottleneck) is slowed to half speed through its Modbus speed register,
    as an HMI does: the measured rate halves, the promise moves later, and the promise history
    keeps the new date with a reason that names the lower measured rate.
(b) The supplier confirms PO-000001 three days later than it was needed (REST, as the
    supplier): the promise moves three days later again, its reason naming the PO and the
    confirmed date.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient

from taktline_cloud.settings import CloudSettings
from taktline_edge.config import load_config as load_edge_config
from taktline_simulators.modbus_server import run_plant
from tests.plant_harness import (
    CONFIG,
    DATABASES,
    HTTP_TIMEOUT_S,
    MODBUS_TIMEOUT_S,
    SPEED_REGISTER,
    InProcessCloud,
    PlantHarness,
    PlantSpec,
    point_edge_at,
    sim_config,
    tune_edge,
)
from tests.plant_harness import database_url as _database_url
from tests.support import Mosquitto, wait_for

pytestmark = pytest.mark.mosquitto

# Ten times the demo's speed (about 6 parts/s off the line, some 22 000/h) and no random faults,
# so the measured rate is steady within a few percent over the 5 s window.
SPEC = PlantSpec(cycle_time_factor=0.1, mtbf_s=1e9, rate_window_s=5.0)
WORK_ORDER = "60000"
"""WO-1001: hours of work at that rate, so it stays running through the test."""
ORDERED = "100000"
"""SO-1001 line 1: beyond stock plus WO-1001, so capable-to-promise answers it."""
HOUSINGS_ON_HAND = "70000"
"""Cast housings in the component store: WO-1001's, and less than SO-1001 needs on top."""
PO_QUANTITY = "100000"
NEEDED_IN_DAYS = 3
CONFIRMED_IN_DAYS = 6
ACME = {"X-Taktline-Supplier": "ACME"}
PROMISES = "/api/sales-orders/SO-1001/lines/1/promises"
PRESS = "M1"
"""The line's slowest machine: at half speed the whole line makes half as much."""
_MEASURED = re.compile(r"made on LINE-1 .*? at ([\d,]+)/h measured")


def plant_master_data() -> dict[str, Any]:
    """This test's plant: the demo line's machines, one product of two bought components."""
    return {
        "organisation": {
            "group": {"code": "TL-GROUP", "name": "Taktline Test Group"},
            "company": {"code": "TL-CO", "name": "Taktline Test Co."},
            "plant": {"code": "PLANT-1", "name": "Supply loop test plant"},
            "area": {"code": "ASSY", "name": "Assembly"},
        },
        "lines": [
            {
                "code": "LINE-1",
                "name": "Assembly line 1",
                "gateway": "GW-1",
                "machines": [
                    {"code": "M1", "name": "Press"},
                    {"code": "M2", "name": "Weld"},
                    {"code": "M3", "name": "Test & pack"},
                ],
                "work_centre": {"code": "WC-LINE-1", "standard_rate_per_hour": "2160"},
            }
        ],
        "items": [
            {
                "sku": "FG-100",
                "name": "Pump housing assembly",
                "kind": "finished",
                "uom": "pcs",
                "planning": {"lead_time_days": 1, "source": "make"},
            },
            {
                "sku": "RM-HOUSING",
                "name": "Cast housing",
                "kind": "raw",
                "uom": "pcs",
                "planning": {"lead_time_days": 10},
            },
            {
                "sku": "RM-SCREW-M6",
                "name": "Screw M6x20",
                "kind": "raw",
                "uom": "pcs",
                "planning": {"lead_time_days": 3},
            },
        ],
        "boms": {
            "FG-100": [
                {"component": "RM-HOUSING", "quantity": "1"},
                {"component": "RM-SCREW-M6", "quantity": "4"},
            ]
        },
        "locations": [
            {"code": "WH1/RAW", "name": "Raw material store", "kind": "internal"},
            {"code": "WH1/FG", "name": "Finished goods store", "kind": "internal"},
            {"code": "VIRTUAL/PRODUCTION", "name": "Production", "kind": "production"},
            {"code": "VIRTUAL/SUPPLIER", "name": "Suppliers", "kind": "supplier"},
            {"code": "VIRTUAL/CUSTOMER", "name": "Customers", "kind": "customer"},
            {"code": "VIRTUAL/INVENTORY", "name": "Inventory adjustment", "kind": "inventory"},
        ],
        "production": {"component_location": "WH1/RAW", "finished_location": "WH1/FG"},
        "opening_stock": [
            {
                "item": "RM-HOUSING",
                "location": "WH1/RAW",
                "quantity": HOUSINGS_ON_HAND,
                "unit_cost": "12.50",
            },
            {
                "item": "RM-SCREW-M6",
                "location": "WH1/RAW",
                "quantity": "1000000",
                "unit_cost": "0.04",
            },
        ],
        "customers": [{"code": "CUST-ACME", "name": "ACME Pumps GmbH"}],
        "sales_orders": [
            {
                "number": "SO-1001",
                "customer": "CUST-ACME",
                "lines": [
                    {"line": 1, "item": "FG-100", "quantity": ORDERED, "requested_in_days": 2}
                ],
            }
        ],
        "work_orders": [
            {"number": "WO-1001", "item": "FG-100", "quantity": WORK_ORDER, "line": "LINE-1"}
        ],
        "planning": {"bucket": "day", "horizon_days": 28},
    }


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _database_url(request, tmp_path)


@asynccontextmanager
async def supply_plant(
    tmp_path: Path, broker: Mosquitto, database_url: str
) -> AsyncIterator[PlantHarness]:
    """Simulated line, in-process cloud on this test's plant file and the edge agent, wired as
    `tests.plant_harness.plant_harness` wires them (which reads config/plant.yaml instead)."""
    plant_file = tmp_path / "plant.yaml"
    plant_file.write_text(yaml.safe_dump(plant_master_data(), sort_keys=False), encoding="utf-8")
    settings = CloudSettings(
        database_url=database_url,
        plant_file=plant_file,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        http_port=0,
        dashboard_dir=tmp_path / "no-dashboards",
        rate_window_s=SPEC.rate_window_s,
    )
    try:
        async with AsyncExitStack() as stack:
            plant = await stack.enter_async_context(run_plant(sim_config(SPEC)))
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=HTTP_TIMEOUT_S))
            edge = load_edge_config(CONFIG / "edge.yaml")
            edge_config = tune_edge(
                point_edge_at(edge, broker, plant, tmp_path / "outbox.db"), SPEC
            )
            harness = PlantHarness(
                plant, InProcessCloud(settings), edge_config, http, database_url=database_url
            )
            stack.push_async_callback(harness.close)
            stack.push_async_callback(harness.stop_cloud)
            await harness.start_cloud()
            stack.push_async_callback(harness.stop_edge)
            await harness.start_edge()
            yield harness
    except BaseExceptionGroup as group:
        # The simulators' TaskGroup wraps whatever the test raised: show it unwrapped.
        if len(group.exceptions) != 1:
            raise
        error = group.exceptions[0]
        error.__suppress_context__ = True
        raise error from error.__cause__


async def call(
    harness: PlantHarness,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """A REST call with a JSON body; its JSON answer (any 4xx/5xx fails, naming the text)."""
    response = await harness.http.request(
        method, harness.base_url + path, json=body, headers=headers
    )
    assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


async def slow_down(harness: PlantHarness, machine: str, percent: int) -> None:
    """Write one machine's speed register (percent of nominal) over Modbus TCP, as an HMI does."""
    host, port = harness.plant.endpoints[machine]
    client = AsyncModbusTcpClient(host, port=port, timeout=MODBUS_TIMEOUT_S, retries=1)
    assert await client.connect(), f"cannot connect to {machine} at {host}:{port}"
    try:
        answer = await client.write_register(SPEED_REGISTER, percent, device_id=1)
        assert not answer.isError(), f"{machine}: speed {percent}: {answer}"
    finally:
        client.close()


async def the_line(harness: PlantHarness) -> dict[str, Any]:
    """SO-1001 line 1 as GET /api/sales-orders shows it."""
    rows = await harness.get("/api/sales-orders")
    (row,) = [r for r in rows if (r["order"], r["line"]) == ("SO-1001", 1)]
    return dict(row)


def measured_rate(reason: str) -> Decimal | None:
    """The measured rate per hour a capable-to-promise reason makes the order at."""
    found = _MEASURED.search(reason)
    return Decimal(found.group(1).replace(",", "")) if found else None


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), UTC)


def confirmed(day: date) -> str:
    """How a reason names a PO's confirmed date: "28 Nov 00:00"."""
    return f"{day.day} {day:%b} 00:00"


async def test_slow_machine_and_late_po_move_the_pegged_promise(
    mosquitto: Mosquitto, tmp_path: Path, database_url: str
) -> None:
    async with supply_plant(tmp_path, mosquitto, database_url) as harness:
        await harness.wait_online()
        today = datetime.now(UTC).date()
        needed = today + timedelta(days=NEEDED_IN_DAYS)

        # The housings SO-1001 needs beyond those on hand are on order from ACME.
        acme = {"code": "ACME", "name": "Acme Castings", "lead_days": 1}
        await call(harness, "PUT", "/api/suppliers/ACME", acme)
        offer = {"item": "RM-HOUSING", "unit_price": "14.50"}
        await call(harness, "PUT", "/api/suppliers/ACME/items", offer)
        wanted = {"item": "RM-HOUSING", "quantity": PO_QUANTITY, "needed": needed.isoformat()}
        (po,) = await call(harness, "POST", "/api/purchase-orders", {"requisitions": [wanted]})
        number = po["number"]
        await call(harness, "POST", f"/api/purchase-orders/{number}/send")

        # MRP pegs the PO to the sales order (through FG-100's planned order).
        await harness.post("/api/mrp/runs")
        pegging = await harness.get("/api/mrp/pegging", supply=f"{number}/1")
        served = {s["demand"] for peg in pegging["pegs"] for s in peg["serves"]}
        assert any("SO-1001" in demand for demand in served), pegging

        assert (await harness.post("/api/work-orders/WO-1001/release"))["status"] == "released"
        assert (await harness.post("/api/work-orders/WO-1001/start"))["status"] == "running"

        # Full speed: once the rate is measured, the promise is the PO's date plus the time
        # to make what stock and WO-1001 leave short at that rate.
        async def measured_promise() -> dict[str, Any] | None:
            row = await the_line(harness)
            reason = row["promise_reason"] or ""
            ready = row["promised_at"] is not None and measured_rate(reason) and number in reason
            return row if ready else None

        first = await wait_for(measured_promise, timeout=20, interval=0.2, what="measured CTP")
        first_rate = measured_rate(first["promise_reason"])
        assert first_rate is not None, first["promise_reason"]
        assert first_rate > 10_000, first["promise_reason"]
        assert f"{number} confirmed {confirmed(needed)}" in first["promise_reason"]
        assert f", {confirmed(needed)} to " in first["promise_reason"]  # making waits for it
        assert first["at_risk"] is True  # requested in 2 days, the housings come in 3
        first_at = when(first["promised_at"])
        making = first_at - midnight(needed)
        assert timedelta(hours=2) < making < timedelta(hours=12), first["promise_reason"]

        # (a) The press at half speed: the line's measured rate halves, making takes about
        # twice as long, and the promise moves later by that.
        await slow_down(harness, PRESS, 50)
        later_than = midnight(needed) + making * 1.5

        async def slowed() -> dict[str, Any] | None:
            row = await the_line(harness)
            at = row["promised_at"]
            return row if at is not None and when(at) >= later_than else None

        second = await wait_for(slowed, timeout=20, interval=0.2, what=f"promise >= {later_than}")
        second_rate = measured_rate(second["promise_reason"])
        assert second_rate is not None, second["promise_reason"]
        assert second_rate < first_rate * Decimal("0.7"), (first_rate, second["promise_reason"])
        history = await harness.get(PROMISES)
        given = [(h["promised_at"], h["reason"]) for h in history]
        assert (second["promised_at"], second["promise_reason"]) in given
        assert given.index((first["promised_at"], first["promise_reason"])) < given.index(
            (second["promised_at"], second["promise_reason"])
        )

        # (b) The supplier confirms three days later than needed: the promise follows, and its
        # reason names the PO and the date it was confirmed for.
        late = today + timedelta(days=CONFIRMED_IN_DAYS)
        answer = {"lines": [{"line": 1, "date": late.isoformat()}]}
        await call(harness, "POST", f"/api/purchase-orders/{number}/confirmation", answer, ACME)
        third = await the_line(harness)
        third_at = when(third["promised_at"])
        third_reason = third["promise_reason"]
        assert f"{number} confirmed {confirmed(late)}" in third_reason, third_reason
        assert f", {confirmed(late)} to " in third_reason, third_reason  # making waits for it
        # Three days later (the slowed line's rate may still be settling: only later, never
        # earlier, than the confirmation's three days less the rate's jitter).
        moved = third_at - when(second["promised_at"])
        assert moved > timedelta(days=CONFIRMED_IN_DAYS - NEEDED_IN_DAYS) - making / 4, moved
        assert midnight(late) + making < third_at < midnight(late) + 4 * making, third_reason

        history = await harness.get(PROMISES)
        last = [h for h in history if number in h["reason"] and confirmed(late) in h["reason"]]
        assert last, [h["reason"] for h in history]
        (component,) = [s for s in last[0]["steps"] if s["kind"] == "component"]
        assert component["reference"] == number
        assert when(component["at"]) == midnight(late)
        times = [when(h["at"]) for h in history]
        assert times == sorted(times)
        assert all(h["reason"] for h in history)
