"""MRP runs in the background with progress, one at a time, and live events of runs and
reservations, over REST on SQLite and PostgreSQL (the demo plant, as in test_mrp_runs.py).

A background run is held half-way (its planner waits for the test) so its running state is
seen for certain: no sleeps, every wait is on a condition with a deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taktline_cloud.api import ApiContext, install_api
from taktline_cloud.errors import Invalid
from taktline_cloud.events import Event
from taktline_cloud.live import LiveHub, ServiceGateway, ServiceWorker
from taktline_cloud.planning.mrp import MrpPlan
from taktline_cloud.planning_runs import MrpStart
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database
from tests.support import Clock, wait_for_sync

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
DEADLINE_S = 10.0


class RecordingHub(LiveHub):
    """The live hub, keeping what it was asked to publish (on the event loop's thread)."""

    def __init__(self) -> None:
        super().__init__(max_queue=16)
        self.published: list[Event] = []
        self._lock = threading.Lock()

    def publish(self, events: Sequence[Event]) -> None:
        with self._lock:
            self.published.extend(events)
        super().publish(events)

    def of(self, *types: str) -> list[Event]:
        with self._lock:
            return [e for e in self.published if e.type in types]


class HeldPlanner(PlantService):
    """The plant service whose background planner waits for `release` after its first step."""

    def __init__(self, db: Database, clock: Clock) -> None:
        super().__init__(db, clock=clock)
        self.planning = threading.Event()
        self.release = threading.Event()
        self.fail = False

    def plan_mrp_run(self, start: MrpStart) -> MrpPlan:  # type: ignore[override]
        start.job.progress(0, len(start.data.order))
        self.planning.set()
        assert self.release.wait(DEADLINE_S), "the test did not release the planner"
        if self.fail:
            raise Invalid("MRP cannot plan: the test's planner fails")
        return PlantService.plan_mrp_run(start)


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    raw = yaml.safe_load(PLANT.read_text(encoding="utf-8"))
    raw.pop("work_orders", None)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture
def service(db: Database, demo: Path) -> HeldPlanner:
    plant = HeldPlanner(db, Clock(T0))
    plant.load_master_data(demo)
    return plant


@pytest.fixture
def hub() -> RecordingHub:
    return RecordingHub()


@pytest.fixture
def client(service: HeldPlanner, hub: RecordingHub) -> Iterator[TestClient]:
    app = FastAPI()
    install_api(app)
    app.state.taktline = ApiContext(ServiceGateway(service, ServiceWorker(), hub), hub)
    with TestClient(app) as test_client:
        yield test_client


def ok(response: Any, code: int = 200) -> Any:
    assert response.status_code == code, response.text
    return response.json()


def test_a_background_run_shows_progress_refuses_a_second_and_finishes_live(
    client: TestClient, service: HeldPlanner, hub: RecordingHub
) -> None:
    assert client.get("/api/mrp/runs/current").status_code == 404

    started = client.post("/api/mrp/runs", params={"background": "true"})
    job = ok(started, 202)
    assert started.headers["location"] == f"/api/mrp/runs/jobs/{job['job']}"
    assert (job["status"], job["kind"], job["run"]) == ("running", "regenerative", None)
    assert wait_for_sync(service.planning.is_set, DEADLINE_S, what="the planner started")

    # While it plans: running, in the planning phase, 0 of the demo's 5 items; a second run
    # (in the background or not) is refused.
    current = ok(client.get("/api/mrp/runs/current"))
    assert (current["job"], current["status"], current["phase"]) == (
        job["job"],
        "running",
        "planning",
    )
    assert (current["done"], current["total"], current["percent"]) == (0, 5, "0")
    assert ok(client.get(f"/api/mrp/runs/jobs/{job['job']}")) == current
    again = client.post("/api/mrp/runs", params={"background": "true"})
    assert again.status_code == 409
    assert f"an MRP run is in progress (job {job['job']})" in again.json()["detail"]
    assert client.post("/api/mrp/runs").status_code == 409
    # The worker thread is free meanwhile: reads answer (nothing stored yet).
    assert client.get("/api/mrp/runs/latest").status_code == 404

    service.release.set()
    done = wait_for_sync(
        lambda: (row := ok(client.get("/api/mrp/runs/current")))["status"] == "finished" and row,
        DEADLINE_S,
        what="the background run finished",
    )
    assert (done["phase"], done["done"], done["total"], done["percent"]) == (
        "finished",
        5,
        5,
        "100",
    )
    run = done["run"]
    assert (run["kind"], run["planned_orders"], run["exceptions"]) == ("regenerative", 4, 3)
    assert ok(client.get("/api/mrp/runs/latest")) == run
    assert ok(client.get(f"/api/mrp/runs/{run['id']}")) == run
    assert client.get("/api/mrp/runs/999").status_code == 404
    assert client.get("/api/mrp/runs/jobs/99").status_code == 404
    assert client.get("/api/mrp/runs/0").status_code == 422

    # Live: progress (planning 0 of 5, then storing), then one finished event with the counts.
    finished = wait_for_sync(lambda: hub.of("mrp.run.finished"), DEADLINE_S, what="finished")
    (event,) = finished
    assert event.data["status"] == "finished"
    assert event.data["run"] == run
    progress = [(e.data["phase"], e.data["done"], e.data["total"]) for e in hub.of("mrp.progress")]
    assert progress[0] == ("planning", 0, 0)
    planning = [done for phase, done, _ in progress if phase == "planning"]
    assert planning == sorted(planning)
    assert planning[-1] == 5  # each item is 20 %: none is held back
    assert progress[-1][0] == "storing"
    assert all(e.data["job"] == job["job"] for e in hub.of("mrp.progress", "mrp.run.finished"))

    # The next run may start now; the synchronous form answers the stored run (201).
    service.release.set()
    second = ok(client.post("/api/mrp/runs"), 201)
    assert second["id"] > run["id"]
    assert [e.data["run"]["id"] for e in hub.of("mrp.run.finished")] == [run["id"], second["id"]]


def test_a_run_that_cannot_plan_fails_and_frees_the_planner(
    client: TestClient, service: HeldPlanner, hub: RecordingHub
) -> None:
    service.fail = True
    service.release.set()
    job = ok(client.post("/api/mrp/runs", params={"background": "true"}), 202)
    failed = wait_for_sync(
        lambda: (row := ok(client.get("/api/mrp/runs/current")))["status"] == "failed" and row,
        DEADLINE_S,
        what="the background run failed",
    )
    assert (failed["job"], failed["phase"], failed["run"]) == (job["job"], "failed", None)
    assert failed["error"] == "MRP cannot plan: the test's planner fails"
    (event,) = wait_for_sync(lambda: hub.of("mrp.run.finished"), DEADLINE_S, what="its event")
    assert (event.data["status"], event.data["error"]) == ("failed", failed["error"])
    assert client.get("/api/mrp/runs/latest").status_code == 404  # nothing stored

    service.fail = False
    assert ok(client.post("/api/mrp/runs"), 201)["id"] >= 1


def test_reservations_go_live_as_created_released_and_consumed(
    client: TestClient, hub: RecordingHub
) -> None:
    body = {"item": "FG-100", "location": "WH1/FG", "demand": "SO-1001/1", "quantity": "100"}
    first = ok(client.post("/api/stock/reservations", json=body), 201)
    (created,) = hub.of("reservation.created")
    assert created.data == first
    assert (created.data["status"], created.data["open"]) == ("open", "100")

    released = ok(client.delete(f"/api/stock/reservations/{first['id']}"))
    (event,) = hub.of("reservation.released")
    assert event.data == {**released, "amount": "100"}
    assert (event.data["status"], event.data["open"]) == ("released", "0")

    second = ok(client.post("/api/stock/reservations", json={**body, "quantity": "50"}), 201)
    consumed = ok(
        client.post(f"/api/stock/reservations/{second['id']}/consume", json={"quantity": "20"})
    )
    (event,) = hub.of("reservation.consumed")
    assert (event.data["id"], event.data["amount"]) == (second["id"], "20")
    assert (event.data["consumed"], event.data["open"]) == ("20", "30")
    assert isinstance(event.data["move"], int)
    assert {k: v for k, v in event.data.items() if k not in ("amount", "move")} == consumed
    # The reservation moved before the stock it moved: its event comes first in the change.
    types = [e.type for e in hub.published]
    assert types.index("reservation.consumed") < types.index("stock.updated")
    assert types.count("reservation.created") == 2


def test_a_purchasing_change_replans_its_items_by_net_change_and_says_so(
    service: HeldPlanner,
) -> None:
    assert service.mrp_supply_changed({"RM-GASKET"}) == []  # no plan of this service yet
    first, _ = service.run_mrp()
    (event,) = service.mrp_supply_changed({"RM-GASKET"})
    latest = service.mrp_latest_run()
    assert (latest.kind, latest.id, latest.items_planned) == ("net-change", first.id + 1, 1)
    assert (event.type, event.at, event.data["kind"]) == ("mrp.run.finished", T0, "net-change")
    assert event.data["run"] == latest.to_json()
    assert service.mrp_plan() is not None
