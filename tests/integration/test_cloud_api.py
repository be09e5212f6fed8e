"""The whole cloud in-process (run_cloud on port 0, SQLite, a private mosquitto, a test edge node):
REST commands, counts flowing into the work order, redelivery changing nothing, the live feed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from taktline_cloud.app import CloudRunError, run_cloud
from taktline_cloud.settings import CloudSettings
from taktline_contract.metrics import GOOD_COUNT, MACHINE_STATE, SCRAP_COUNT
from tests.integration.test_cloud_host import EdgeNode, retained_state
from tests.support import Mosquitto, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]


def cloud_settings(tmp_path: Path, mqtt_port: int, **overrides: Any) -> CloudSettings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'cloud.db'}",
        "plant_file": REPO / "config" / "plant.yaml",
        "mqtt_port": mqtt_port,
        "mqtt_timeout_s": 5.0,
        "http_port": 0,
        "dashboard_dir": tmp_path / "no-dashboards",
        "refresh_interval_s": 0.2,
        "batch_max_age_s": 0.02,
    } | overrides
    return CloudSettings(**values)


@contextlib.asynccontextmanager
async def running_cloud(settings: CloudSettings) -> AsyncIterator[str]:
    """Run the cloud in this loop; yield its base URL; stop it gracefully at the end."""
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    cloud = asyncio.create_task(run_cloud(settings, stop, on_ready=ready.set_result))
    try:
        done, _ = await asyncio.wait({cloud, ready}, timeout=30, return_when="FIRST_COMPLETED")
        if cloud in done:
            await cloud  # failed to start: raise why
        assert ready.done(), "the cloud did not start within 30 s"
        yield f"http://127.0.0.1:{ready.result()}"
        stop.set()
        await asyncio.wait_for(cloud, 30)
    finally:
        if not cloud.done():
            cloud.cancel()
            await asyncio.gather(cloud, return_exceptions=True)


@pytest.mark.mosquitto
async def test_counts_from_the_edge_move_a_work_order_and_go_live(
    mosquitto: Mosquitto, tmp_path: Path, database_url: str
) -> None:
    settings = cloud_settings(tmp_path, mosquitto.port, database_url=database_url)
    async with (
        running_cloud(settings) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
        EdgeNode(mosquitto) as edge,
    ):
        await wait_for(
            lambda: _json(http.get("/api/health"), "mqtt_connected"), what="the host online"
        )
        assert (await retained_state(mosquitto)).online

        created = await http.post(
            "/api/work-orders",
            json={"item": "FG-100", "quantity": "50", "line": "LINE-1", "number": "WO-T1"},
        )
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "created"
        assert (await http.post("/api/work-orders/WO-T1/release")).status_code == 200
        started = await http.post("/api/work-orders/WO-T1/start")
        assert started.status_code == 200, started.text
        assert started.json()["status"] == "running"
        conflict = await http.post("/api/work-orders/WO-T1/release")
        assert conflict.status_code == 409
        assert "WO-T1" in conflict.json()["detail"]

        async with connect(url.replace("http", "ws") + "/ws/live", open_timeout=10) as ws:
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert snapshot["type"] == "snapshot"
            assert snapshot["data"]["plant"]["code"] == "PLANT-1"
            assert any(w["number"] == "WO-T1" for w in snapshot["data"]["work_orders"])

            now = datetime.now(UTC)
            machines = {m: {GOOD_COUNT: 1000, SCRAP_COUNT: 10, MACHINE_STATE: 1}
                        for m in ("M1", "M2", "M3")}
            await edge.birth(machines)
            redelivered = b""
            for n in range(1, 6):
                at = now + timedelta(seconds=n)
                await edge.data("M1", {GOOD_COUNT: 1000 + n}, at=at)
                await edge.data("M2", {GOOD_COUNT: 1000 + n}, at=at)
                redelivered = await edge.data("M3", {GOOD_COUNT: 1000 + n}, at=at)

            async def good(number: str) -> str:
                return str((await http.get(f"/api/work-orders/{number}")).json()["good"])

            await wait_for(lambda: _eq(good("WO-T1"), "5"), what="5 good parts on WO-T1")

            # The live feed told about it too.
            seen = await _receive_until(ws, lambda e: e["type"] == "work_order.updated"
                                        and e["data"]["number"] == "WO-T1"
                                        and e["data"]["good"] == "5")
            assert seen["at"].endswith("Z")

            ledger_before = (await http.get("/api/stock/ledger")).json()
            # The same DDATA again (QoS 1 redelivery, replay): nothing may change.
            await edge.client.publish(edge.topic("DDATA", "M3"), redelivered, qos=1)
            marker_at = now + timedelta(seconds=30)
            await edge.data("M1", {GOOD_COUNT: 2000}, at=marker_at)
            await wait_for(
                lambda: _machine_good(http, "M1", "2000"), what="the marker after the redelivery"
            )
            assert await good("WO-T1") == "5"
            assert (await http.get("/api/stock/ledger")).json() == ledger_before

    # Stopped gracefully: STATE offline, retained for edge nodes to see.
    assert not (await retained_state(mosquitto)).online


async def test_without_a_broker_the_api_serves_degraded_and_the_dashboards(
    tmp_path: Path,
) -> None:
    dashboards = tmp_path / "dist"
    (dashboards / "assets").mkdir(parents=True)
    (dashboards / "index.html").write_text("<html><body>Taktline big screen</body></html>")
    (dashboards / "assets" / "app.js").write_text("console.log('ok')")
    settings = cloud_settings(tmp_path, free_port(), dashboard_dir=dashboards)
    async with running_cloud(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        health = (await http.get("/api/health")).json()
        assert health["status"] == "degraded"
        assert health["mqtt_connected"] is False
        assert "Taktline big screen" in (await http.get("/")).text
        assert (await http.get("/assets/app.js")).status_code == 200
        assert (await http.get("/openapi.json")).json()["info"]["title"] == "Taktline cloud"
        stock = (await http.get("/api/stock")).json()
        assert {row["item"] for row in stock} >= {"RM-HOUSING", "FG-100"}


async def test_invalid_master_data_fails_the_start_with_the_reason(tmp_path: Path) -> None:
    plant = tmp_path / "plant.yaml"
    plant.write_text("lines: [oops\n")
    settings = cloud_settings(tmp_path, free_port(), plant_file=plant)
    with pytest.raises(CloudRunError, match=r"plant\.yaml"):
        async with running_cloud(settings):
            pass


async def _receive_until(ws: Any, predicate: Any, within: float = 10) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            message = json.loads(await ws.recv())
            if predicate(message):
                return dict(message)


async def _json(response: Any, key: str) -> Any:
    return (await response).json()[key]


async def _eq(value: Any, expected: str) -> bool:
    return await value == expected


async def _machine_good(http: httpx.AsyncClient, code: str, expected: str) -> bool:
    machines = (await http.get("/api/machines")).json()
    return any(m["code"] == code and m["good_count"] == expected for m in machines)
