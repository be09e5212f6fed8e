"""An MRP run's progress: the pure planner's callback, and the job's throttled live events."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from taktline_cloud.events import Event
from taktline_cloud.planning.buckets import Buckets
from taktline_cloud.planning.items import ItemPlanning
from taktline_cloud.planning.mrp import Demand, PlanningData, regenerate
from taktline_cloud.planning_runs import MrpJob, run_finished_event
from taktline_cloud.readmodels import MrpRunRow

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def job_with(sent: list[Event], ticks: Ticks) -> MrpJob:
    return MrpJob(7, "regenerative", T0, emit=sent.extend, clock=ticks, now=lambda: T0)


def test_the_planner_reports_every_percent_and_its_end() -> None:
    items = [ItemPlanning(f"I{n:03d}") for n in range(250)]
    data = PlanningData(
        Buckets(date(2026, 11, 24), 1, 3),
        items,
        demands=[Demand("SO-1/1", "I000", date(2026, 11, 25), Decimal(5))],
    )
    calls: list[tuple[int, int]] = []
    regenerate(data, lambda done, total: calls.append((done, total)))
    # 250 items: every 2nd (1 %), and the last.
    assert calls[0] == (2, 250)
    assert calls[-1] == (250, 250)
    assert len(calls) == 125
    assert all(total == 250 for _, total in calls)


def test_progress_events_come_every_5_percent_when_the_clock_stands_still() -> None:
    sent: list[Event] = []
    ticks = Ticks()
    job = job_with(sent, ticks)
    job.phase("planning")
    for done in range(1, 1001):
        job.progress(done, 1000)
    percents = [e.data["percent"] for e in sent]
    # The phase (0 %), then 5, 10, … 100: 21 events for 1 000 callbacks.
    assert percents == ["0"] + [str(p) for p in range(5, 101, 5)]
    assert {e.type for e in sent} == {"mrp.progress"}
    last = sent[-1].data
    assert (last["job"], last["status"], last["phase"], last["done"], last["total"]) == (
        7,
        "running",
        "planning",
        1000,
        1000,
    )
    assert job.row().done == 1000


def test_progress_events_come_every_250_ms_however_little_moved() -> None:
    sent: list[Event] = []
    ticks = Ticks()
    job = job_with(sent, ticks)
    job.progress(1, 10_000)  # the first is always sent
    for done in range(2, 12):
        ticks.now += 0.1
        job.progress(done, 10_000)
    # 0.1 s apart: one in every 3 callbacks (0.3 s >= 0.25 s since the last one).
    assert [e.data["done"] for e in sent] == [1, 4, 7, 10]
    assert job.row().done == 11  # the row is always current, events are throttled


def test_finished_and_failed_jobs_say_so_in_one_event() -> None:
    sent: list[Event] = []
    job = job_with(sent, Ticks())
    job.progress(3, 5)
    row = MrpRunRow(
        id=4,
        kind="regenerative",
        started_at=T0,
        finished_at=T0,
        duration_ms=Decimal(12),
        plan_start=date(2026, 11, 24),
        bucket_days=1,
        bucket_count=28,
        items=5,
        items_planned=5,
        planned_orders=4,
        pegs=9,
        exceptions=3,
        beyond_horizon=0,
    )
    event = job.finished(row)
    assert (event.type, event.at) == ("mrp.run.finished", T0)
    assert (event.data["status"], event.data["percent"], event.data["done"]) == (
        "finished",
        "100",
        5,
    )
    assert (event.data["run"]["planned_orders"], event.data["run"]["exceptions"]) == (4, 3)
    assert not job.running

    other = job_with([], Ticks())
    failed = other.failed("MRP cannot plan: a cycle", T0)
    assert (failed.data["status"], failed.data["error"], failed.data["run"]) == (
        "failed",
        "MRP cannot plan: a cycle",
        None,
    )
    assert not other.running

    net = run_finished_event(row.model_copy(update={"kind": "net-change"}), T0)
    assert (net.type, net.data["kind"], net.data["run"]["id"]) == (
        "mrp.run.finished",
        "net-change",
        4,
    )
