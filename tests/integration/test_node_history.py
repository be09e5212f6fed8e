"""Online/offline history of edge nodes and devices on both backends: the rows every status
change leaves, period durations, the REST route's filters and errors, the migration's backfill,
and the whole path from Sparkplug births and deaths through the host to the API."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from taktline_cloud.api import ApiContext, install_api
from taktline_cloud.errors import Invalid, NotFound
from taktline_cloud.live import LiveHub, ServiceGateway, ServiceWorker
from taktline_cloud.readmodels import NodeChangeRow
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database
from taktline_contract.metrics import BD_SEQ, GOOD_COUNT
from taktline_contract.sparkplug import DataType, Metric
from tests.integration.test_cloud_api import cloud_settings, running_cloud
from tests.integration.test_cloud_host import EdgeNode
from tests.support import Clock, Mosquitto, wait_for

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock(at(60))


@pytest.fixture
def service(db: Database, clock: Clock) -> PlantService:
    """A service holding one story of GW-1 and its machines M1, M2 (no master data needed)."""
    plant = PlantService(db, clock=clock)
    clock.now = at(45)  # recorded_at: when the cloud stored each change
    plant.record_node_status("GW-1", None, True, at(0))  # NBIRTH
    plant.record_node_status("GW-1", "M1", True, at(1))  # DBIRTH
    plant.record_node_status("GW-1", "M2", True, at(1))  # DBIRTH
    plant.record_node_status("GW-1", "M1", True, at(2))  # a second worker's copy: no change
    plant.record_node_status("GW-1", "M1", False, at(10))  # DDEATH
    plant.record_node_status("GW-1", None, False, at(20))  # NDEATH: M2 goes too, M1 was off
    plant.record_node_status("GW-1", None, True, at(30))  # NBIRTH
    plant.record_node_status("GW-1", "M1", True, at(31))  # DBIRTH
    plant.record_node_status("GW-2", None, True, at(5))
    clock.now = at(60)
    return plant


Change = tuple[str | None, bool, datetime, datetime | None, Decimal]


def story(changes: list[NodeChangeRow]) -> list[Change]:
    return [(c.device, c.online, c.at, c.ended_at, c.duration_s) for c in changes]


EVERYTHING: list[Change] = [  # newest first
    ("M1", True, at(31), None, Decimal(29)),  # open: up to the clock (60)
    (None, True, at(30), None, Decimal(30)),
    ("M2", False, at(20), None, Decimal(40)),
    (None, False, at(20), at(30), Decimal(10)),
    ("M1", False, at(10), at(31), Decimal(21)),
    ("M2", True, at(1), at(20), Decimal(19)),
    ("M1", True, at(1), at(10), Decimal(9)),
    (None, True, at(0), at(20), Decimal(20)),
]


def test_every_status_change_leaves_one_row_with_its_period(service: PlantService) -> None:
    history = service.node_history("GW-1")
    assert history.edge_node == "GW-1"
    assert history.device is None
    assert history.as_of == at(60)
    assert story(history.changes) == EVERYTHING
    assert {c.recorded_at for c in history.changes} == {at(45)}
    assert {c.edge_node for c in history.changes} == {"GW-1"}
    # The current status agrees with the newest change of each node and device.
    current = {(n.device, n.online, n.since) for n in service.nodes() if n.edge_node == "GW-1"}
    assert current == {(None, True, at(30)), ("M1", True, at(31)), ("M2", False, at(20))}


def test_history_filters_by_device_time_and_count(service: PlantService) -> None:
    m1 = service.node_history("GW-1", device="M1")
    assert story(m1.changes) == [c for c in EVERYTHING if c[0] == "M1"]
    assert m1.device == "M1"
    # [since, until): the periods keep their real ends, even past `until`.
    window = service.node_history("GW-1", since=at(10), until=at(30))
    assert story(window.changes) == EVERYTHING[2:5]
    newest = service.node_history("GW-1", limit=3)
    assert story(newest.changes) == EVERYTHING[:3]
    assert story(service.node_history("GW-1", since=at(61)).changes) == []
    # Any offset is taken for the instant it names.
    tokyo = at(10).astimezone(datetime.fromisoformat("2026-01-01T00:00+09:00").tzinfo)
    assert story(service.node_history("GW-1", device="M1", since=tokyo).changes) == [
        c for c in EVERYTHING[:5] if c[0] == "M1"
    ]


def test_durations_never_go_negative_when_clocks_disagree(
    service: PlantService, clock: Clock
) -> None:
    # A DDEATH stamped by an edge whose clock is behind, after a birth stamped on receipt:
    # the period ends at the next change recorded, whatever its time says.
    service.record_node_status("GW-2", "M9", True, at(40))
    service.record_node_status("GW-2", "M9", False, at(38))
    clock.now = at(39)
    changes = service.node_history("GW-2", device="M9").changes
    assert story(changes) == [
        ("M9", True, at(40), at(38), Decimal(0)),
        ("M9", False, at(38), None, Decimal(1)),
    ]


def test_bad_history_questions_are_refused_with_the_reason(service: PlantService) -> None:
    with pytest.raises(NotFound, match="no edge node 'GW-9'"):
        service.node_history("GW-9")
    with pytest.raises(NotFound, match="no device 'M7' on edge node 'GW-1'"):
        service.node_history("GW-1", device="M7")
    with pytest.raises(Invalid, match="since: 2026-11-24T08:00:00 has no time zone"):
        service.node_history("GW-1", since=datetime(2026, 11, 24, 8, 0))  # noqa: DTZ001
    with pytest.raises(Invalid, match="must be before until"):
        service.node_history("GW-1", since=at(30), until=at(30))
    with pytest.raises(Invalid, match="limit must be between 1 and 10000, got 0"):
        service.node_history("GW-1", limit=0)
    with pytest.raises(Invalid, match="device must not be empty"):
        service.node_history("GW-1", device="")


def test_the_migration_starts_the_history_from_the_stored_statuses(database_url: str) -> None:
    with Database(database_url) as db:
        plant = PlantService(db, clock=Clock(at(60)))
        plant.record_node_status("GW-1", None, True, at(0))
        plant.record_node_status("GW-1", "M1", False, at(7))
        with db.transaction() as tx:
            # Back to version 4, as a database of the previous release would be.
            tx.executor.execute("DROP TABLE node_history")
            tx.executor.execute("DELETE FROM schema_version WHERE version >= 5")
    with Database(database_url) as db:
        changes = PlantService(db, clock=Clock(at(60))).node_history("GW-1").changes
        assert story(changes) == [
            ("M1", False, at(7), None, Decimal(53)),
            (None, True, at(0), None, Decimal(60)),
        ]
        assert [c.recorded_at for c in changes] == [at(7), at(0)]
        with db.transaction() as tx:  # applied again by hand: nothing is added twice
            tx.executor.execute("DELETE FROM schema_version WHERE version >= 5")
    with Database(database_url) as db:
        assert len(PlantService(db, clock=Clock(at(60))).node_history("GW-1").changes) == 2


# --- the REST route ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def api(service: PlantService) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_api(app)
    hub = LiveHub(max_queue=16)
    worker = ServiceWorker()
    app.state.taktline = ApiContext(ServiceGateway(service, worker, hub), hub)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
    finally:
        await worker.close()


HISTORY = "/api/nodes/GW-1/history"


async def test_the_route_answers_with_periods_and_filters(service: PlantService) -> None:
    async with api(service) as http:
        answer = await http.get(HISTORY)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["edge_node"] == "GW-1"
        assert body["device"] is None
        assert body["as_of"] == "2026-11-24T08:01:00.000Z"
        assert body["changes"][0] == {
            "edge_node": "GW-1",
            "device": "M1",
            "online": True,
            "at": "2026-11-24T08:00:31.000Z",
            "recorded_at": "2026-11-24T08:00:45.000Z",
            "ended_at": None,
            "duration_s": "29",
        }
        assert [c["duration_s"] for c in body["changes"]] == [str(c[4]) for c in EVERYTHING]
        assert body["changes"][3]["ended_at"] == "2026-11-24T08:00:30.000Z"

        params: dict[str, Any] = {
            "device": "M1",
            "since": "2026-11-24T08:00:05Z",
            "until": "2026-11-24T09:00:06+01:00",  # 08:00:06Z: nothing in that second
        }
        assert (await http.get(HISTORY, params=params)).json()["changes"] == []
        params["until"] = "2026-11-24T08:00:31Z"
        m1 = (await http.get(HISTORY, params=params)).json()
        assert [(c["device"], c["online"], c["at"]) for c in m1["changes"]] == [
            ("M1", False, "2026-11-24T08:00:10.000Z")
        ]
        assert m1["device"] == "M1"
        newest = (await http.get(HISTORY, params={"limit": 2})).json()["changes"]
        assert [c["at"] for c in newest] == ["2026-11-24T08:00:31.000Z", "2026-11-24T08:00:30.000Z"]


@pytest.mark.parametrize(
    ("query", "status", "reason"),
    [
        ("", 404, "no edge node 'GW-9'"),
        ("?device=M7", 404, "no device 'M7' on edge node 'GW-1'"),
        ("?since=2026-11-24T08:00:00", 422, "since: 2026-11-24T08:00:00 has no time zone"),
        ("?since=2026-11-24T09:00:00Z&until=2026-11-24T08:00:00Z", 422, "must be before until"),
        ("?since=yesterday", 422, "since"),
        ("?limit=0", 422, "limit"),
        ("?limit=10001", 422, "limit"),
        ("?device=", 422, "device"),
    ],
)
async def test_the_route_refuses_bad_questions_clearly(
    service: PlantService, query: str, status: int, reason: str
) -> None:
    node = "GW-9" if reason.startswith("no edge node") else "GW-1"
    async with api(service) as http:
        answer = await http.get(f"/api/nodes/{node}/history{query}")
    assert answer.status_code == status, answer.text
    assert reason in str(answer.json()["detail"])


async def test_the_route_and_its_models_are_in_the_openapi_document(
    service: PlantService,
) -> None:
    async with api(service) as http:
        document = (await http.get("/openapi.json")).json()
    route = document["paths"]["/api/nodes/{edge_node}/history"]["get"]
    assert {p["name"] for p in route["parameters"]} == {
        "edge_node",
        "device",
        "since",
        "until",
        "limit",
    }
    assert {"200", "404", "422"} <= set(route["responses"])
    schemas = document["components"]["schemas"]
    change = schemas["NodeChangeRow"]["properties"]
    assert set(change) == {
        "edge_node",
        "device",
        "online",
        "at",
        "recorded_at",
        "ended_at",
        "duration_s",
    }
    assert "while it lasts" in change["duration_s"]["description"]
    assert "as_of" in schemas["NodeHistory"]["properties"]


# --- the whole path ------------------------------------------------------------------------------


@pytest.mark.mosquitto
async def test_births_and_deaths_from_the_edge_become_history(
    mosquitto: Mosquitto, tmp_path: Path, database_url: str
) -> None:
    settings = cloud_settings(tmp_path, mosquitto.port, database_url=database_url)
    async with (
        running_cloud(settings) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
        EdgeNode(mosquitto) as edge,
    ):
        await wait_for(lambda: _connected(http), what="the host online")
        await edge.birth({"M1": {GOOD_COUNT: 1}, "M2": {GOOD_COUNT: 1}})
        await wait_for(lambda: _changes(http, 3), what="the births in the history")
        # DDEATH carries when the edge saw the device fail: that, not its arrival, is the time.
        failed_at = _whole_ms(datetime.now(UTC) + timedelta(seconds=2))
        await edge.send("DDEATH", "M1", [], at=failed_at)
        await edge.send("NDEATH", None, [Metric(BD_SEQ, DataType.UINT64, edge.bd_seq)])
        changes = await wait_for(lambda: _changes(http, 6), what="the deaths in the history")

    rows = [(c["device"], c["online"]) for c in changes]
    assert rows[0] == ("M1", False)  # stamped 2 s ahead by the edge: the newest
    assert sorted(rows[1:3], key=str) == sorted([(None, False), ("M2", False)], key=str)
    assert sorted(rows[3:], key=str) == sorted([(None, True), ("M1", True), ("M2", True)], key=str)
    m1 = [c for c in changes if c["device"] == "M1"]
    stamp = failed_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert m1[0]["at"] == stamp
    assert m1[1]["ended_at"] == stamp
    assert Decimal(m1[1]["duration_s"]) > 0


async def _connected(http: httpx.AsyncClient) -> bool:
    return bool((await http.get("/api/health")).json()["mqtt_connected"])


async def _changes(http: httpx.AsyncClient, count: int) -> list[dict[str, Any]] | None:
    answer = await http.get("/api/nodes/GW-1/history")
    if answer.status_code == 404:
        return None
    changes: list[dict[str, Any]] = answer.json()["changes"]
    return changes if len(changes) >= count else None


def _whole_ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
