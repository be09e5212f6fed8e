"""The plant service on both backends: master data, work orders, posting from counters, promises."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from taktline_cloud.errors import Conflict, Invalid, NotFound
from taktline_cloud.events import Event
from taktline_cloud.historian.samples import Sample
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database
from taktline_contract.metrics import GOOD_COUNT, MACHINE_STATE, SCRAP_COUNT, TEMPERATURE
from tests.support import Clock

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
BOM = {"RM-HOUSING": Decimal(1), "RM-SCREW-M6": Decimal(4), "RM-GASKET": Decimal(1)}
BOM["RM-SEALANT"] = Decimal("2.5")
OPENING = {
    ("RM-HOUSING", "WH1/RAW"): Decimal(6000),
    ("RM-SCREW-M6", "WH1/RAW"): Decimal(25000),
    ("RM-GASKET", "WH1/RAW"): Decimal(6000),
    ("RM-SEALANT", "WH1/RAW"): Decimal(15000),
    ("FG-100", "WH1/FG"): Decimal(120),
}


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 - timedelta(hours=1))


@pytest.fixture
def service(db: Database, clock: Clock) -> PlantService:
    # no tolerance: these tests follow every minute the promise moves
    plant = PlantService(db, clock=clock, promise_tolerance=timedelta(0))
    plant.load_master_data(PLANT)
    return plant


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def good(seconds: float, value: int) -> Sample:
    return Sample("M3", GOOD_COUNT, at(seconds), Decimal(value))


def scrap(machine: str, seconds: float, value: int) -> Sample:
    return Sample(machine, SCRAP_COUNT, at(seconds), Decimal(value))


def feed(service: PlantService, clock: Clock, samples: list[Sample]) -> list[Event]:
    """Record samples with the clock at the newest of them (as when they arrive live)."""
    clock.now = max([clock.now, *(s.timestamp for s in samples)])
    return service.record_samples(samples)


def balances(db: Database) -> dict[tuple[str, str], Decimal]:
    with db.transaction(write=False) as tx:
        return tx.balances()


def ledger_sums(service: PlantService) -> dict[tuple[str, str], Decimal]:
    sums: defaultdict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for move in service.ledger(limit=10_000):
        assert move.quantity > 0
        sums[(move.item, move.from_location)] -= move.quantity
        sums[(move.item, move.to_location)] += move.quantity
    return dict(sums)


def of_type(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.type == kind]


def test_loading_master_data_twice_changes_nothing(db: Database, clock: Clock) -> None:
    service = PlantService(db, clock=clock)
    first = service.load_master_data(PLANT)
    assert {e.type for e in first} == {"stock.updated", "work_order.updated", "promise.changed"}
    assert {(r.item, r.location): r.on_hand for r in service.stock()} == OPENING
    opening = service.ledger()
    assert len(opening) == 5
    assert {m.reason for m in opening} == {"opening"}
    assert {m.from_location for m in opening} == {"VIRTUAL/INVENTORY"}

    clock.now += timedelta(days=3)  # a restart days later: requested dates stay as first loaded
    again = PlantService(db, clock=clock)
    assert again.load_master_data(PLANT) == []
    assert again.ledger() == opening
    assert {(r.item, r.location): r.on_hand for r in again.stock()} == OPENING
    (line,) = again.sales_orders()
    assert (line.order, line.customer, line.item, line.quantity) == (
        "SO-1001",
        "CUST-ACME",
        "FG-100",
        Decimal(600),
    )
    assert line.requested_date == date(2026, 11, 25)
    (wo,) = again.work_orders()
    assert (wo.number, wo.status, wo.line) == ("WO-1001", "created", "LINE-1")
    assert wo.quantity == 1000
    assert balances(db) == ledger_sums(again)


def test_counts_post_exactly_and_the_promise_follows_the_rate(
    service: PlantService, db: Database, clock: Clock
) -> None:
    # Counters before the order starts: the baselines.
    feed(
        service,
        clock,
        [good(-10, 500), scrap("M1", -10, 10), scrap("M2", -10, 20), scrap("M3", -10, 30)],
    )
    clock.now = T0
    service.release_work_order("WO-1001")
    row, events = service.start_work_order("WO-1001")
    assert (row.status, row.started_at, row.rate_basis) == ("running", T0, "standard")
    assert of_type(events, "promise.changed")

    # Two minutes at 1 part/s, a PLC counter reset at +121 s, one more minute at 1 part/s.
    series = [good(i, 500 + i) for i in range(1, 121)]
    series += [good(121, 0)] + [good(121 + i, i) for i in range(1, 60)]
    scraps = [scrap("M1", 30, 11), scrap("M1", 90, 12), scrap("M2", 60, 21), scrap("M3", 100, 31)]
    late = good(150, 29)  # held back: arrives after everything else, out of order
    assert late in series
    batch_a = [s for s in series + scraps if s.timestamp <= at(60)]
    batch_b = [s for s in series + scraps if at(60) < s.timestamp <= at(120)]
    batch_c = [s for s in series + scraps if s.timestamp > at(120) and s != late]

    events = feed(service, clock, batch_a)
    assert of_type(events, "posting")[0].data["good_delta"] == "60"
    assert feed(service, clock, batch_a) == []  # the same batch again: nothing at all
    feed(service, clock, batch_b)
    feed(service, clock, batch_c)
    assert feed(service, clock, [late]) == []  # inside a monotonic stretch: nothing to change
    assert feed(service, clock, batch_b + batch_c) == []

    wo = service.work_order("WO-1001")
    expected_good = 120 + 59  # reset counted from 0
    expected_scrap = 4
    assert (wo.good, wo.scrap) == (Decimal(expected_good), Decimal(expected_scrap))
    consumed = expected_good + expected_scrap
    stock = {(r.item, r.location): r.on_hand for r in service.stock()}
    for component, per_unit in BOM.items():
        key = (component, "WH1/RAW")
        assert stock[key] == OPENING[key] - consumed * per_unit
    assert stock[("FG-100", "WH1/FG")] == OPENING[("FG-100", "WH1/FG")] + expected_good
    assert balances(db) == ledger_sums(service)
    assert balances(db)[("FG-100", "VIRTUAL/PRODUCTION")] == -expected_good
    receipts = [m for m in service.ledger("FG-100") if m.reason == "receipt"]
    assert sum(m.quantity for m in receipts) == expected_good
    assert {m.reference for m in receipts} == {"WO-1001"}

    # Promise at +180 s: 600 ordered, 120 + 179 on hand, the rest at the measured rate.
    (line,) = service.sales_orders()
    fast_rate = Decimal(expected_good * 3600) / 180
    assert service.work_order("WO-1001").rate_per_hour == fast_rate.quantize(Decimal("0.1"))
    assert line.promised_at == datetime(2026, 11, 24, 8, 9, tzinfo=UTC)
    assert "at measured 3,580/h" in line.promise_reason
    assert not line.at_risk

    # The rate halves: one part every 2 s for 5 minutes.
    slow = [good(180 + 2 * k, 59 + k) for k in range(1, 151)]
    events = []
    for start in range(0, len(slow), 30):
        events += feed(service, clock, slow[start : start + 30])
    changes = of_type(events, "promise.changed")
    assert changes
    assert changes[-1].data["previous_promised_at"] is not None
    (line,) = service.sales_orders()
    # At +480 s: 329 made; 151 left at the measured 1,800/h = 302 s → 08:13:02 → 08:14.
    assert service.work_order("WO-1001").rate_per_hour == Decimal(1800)
    assert line.promised_at == datetime(2026, 11, 24, 8, 14, tzinfo=UTC)
    assert line.promised_at > datetime(2026, 11, 24, 8, 11, tzinfo=UTC)  # fast rate's promise
    assert "at measured 1,800/h: 671 of 1,000 left" in line.promise_reason

    history = service.promise_history("SO-1001", 1)
    assert len(history) >= 3
    assert [h.at for h in history] == sorted(h.at for h in history)
    assert history[-1].promised_at == line.promised_at
    assert history[-1].reason == line.promise_reason
    assert history[0].promised_at is None  # before any order ran: not covered
    with pytest.raises(NotFound):
        service.promise_history("SO-1001", 9)

    # The line stops: after the rate window the measured rate is 0 and nothing is projected.
    clock.now = at(480 + 301)
    events = service.refresh()
    (line,) = service.sales_orders()
    assert line.promised_at is None
    assert line.at_risk
    assert "no measured output on WO-1001" in line.promise_reason
    assert of_type(events, "promise.changed")
    assert [e.data["rate_per_hour"] for e in of_type(events, "work_order.updated")] == ["0"]
    assert service.refresh() == []  # nothing changed since

    # Completing posts up to now; later parts are not this order's; a late sample in its
    # window still corrects it.
    clock.now = at(800)
    row, events = service.complete_work_order("WO-1001")
    assert (row.status, row.completed_at, row.good) == ("completed", at(800), Decimal(329))
    feed(service, clock, [good(810, 220)])
    assert service.work_order("WO-1001").good == 329
    events = feed(service, clock, [scrap("M2", 700, 22)])
    assert [e.data["scrap_delta"] for e in of_type(events, "posting")] == ["1"]
    assert service.work_order("WO-1001").scrap == expected_scrap + 1
    assert balances(db) == ledger_sums(service)


def test_a_counter_rollover_is_counted_across_the_wrap(service: PlantService, clock: Clock) -> None:
    top = 2**32 - 3
    feed(service, clock, [good(-1, top)])
    clock.now = T0
    service.release_work_order("WO-1001")
    service.start_work_order("WO-1001")
    feed(service, clock, [good(1, top + 1), good(2, top + 2), good(3, 0), good(4, 4)])
    assert service.work_order("WO-1001").good == 7


def test_a_late_reading_before_the_checkpoint_recounts(service: PlantService, clock: Clock) -> None:
    feed(service, clock, [good(-1, 100)])
    clock.now = T0
    service.release_work_order("WO-1001")
    service.start_work_order("WO-1001")
    feed(service, clock, [good(10, 100)])
    feed(service, clock, [good(20, 105)])
    assert service.work_order("WO-1001").good == 5
    # Arriving late: the PLC was reset in between and had made 2 parts at +15 s.
    # 100 → 2 (reset: 2) → 105 (103): the whole window is recounted.
    feed(service, clock, [good(15, 2)])
    assert service.work_order("WO-1001").good == 105
    feed(service, clock, [good(30, 110)])
    assert service.work_order("WO-1001").good == 110


def test_work_order_commands(service: PlantService, clock: Clock) -> None:
    clock.now = T0
    with pytest.raises(Conflict, match="created: cannot become running"):
        service.start_work_order("WO-1001")
    with pytest.raises(NotFound):
        service.release_work_order("WO-9999")
    row, events = service.create_work_order("FG-100", Decimal(50), "LINE-1")
    assert (row.number, row.status, row.quantity) == ("WO-1002", "created", Decimal(50))
    assert [e.type for e in events] == ["work_order.updated"]
    with pytest.raises(Conflict, match="already exists"):
        service.create_work_order("FG-100", Decimal(5), "LINE-1", number="WO-1002")
    with pytest.raises(Invalid, match="unknown item"):
        service.create_work_order("NOPE", Decimal(5), "LINE-1")
    with pytest.raises(Invalid, match="unknown line"):
        service.create_work_order("FG-100", Decimal(5), "LINE-9")
    with pytest.raises(Invalid, match="must be > 0"):
        service.create_work_order("FG-100", Decimal(0), "LINE-1")
    with pytest.raises(Invalid, match="exact decimal"):
        service.create_work_order("FG-100", 2.5, "LINE-1")  # type: ignore[arg-type]

    service.release_work_order("WO-1001")
    service.start_work_order("WO-1001")
    service.release_work_order("WO-1002")
    with pytest.raises(Conflict, match="LINE-1 is already running WO-1001"):
        service.start_work_order("WO-1002")
    assert service.work_order("WO-1002").status == "released"
    service.complete_work_order("WO-1001")
    row, _ = service.start_work_order("WO-1002")
    assert row.status == "running"
    with pytest.raises(Conflict):
        service.release_work_order("WO-1002")
    assert [w.number for w in service.work_orders()] == ["WO-1001", "WO-1002"]


def test_machines_and_node_status(service: PlantService, clock: Clock) -> None:
    assert [(m.code, m.state, m.online) for m in service.machines()] == [
        ("M1", "unknown", False),
        ("M2", "unknown", False),
        ("M3", "unknown", False),
    ]
    events = service.record_node_status("GW-1", None, True, T0)
    assert [e.type for e in events] == ["node.updated"]
    events = service.record_node_status("GW-1", "M1", True, T0)
    assert [e.type for e in events] == ["node.updated", "machine.updated"]
    assert events[1].data["online"] is True
    assert service.record_node_status("GW-1", "M1", True, T0) == []

    events = feed(
        service,
        clock,
        [
            Sample("M1", MACHINE_STATE, at(1), Decimal(1)),
            Sample("M1", TEMPERATURE, at(1), Decimal("62.1")),
            Sample("M1", MACHINE_STATE, at(0), Decimal(2)),  # older: not the current state
        ],
    )
    assert [e.type for e in events] == ["machine.updated"]
    assert events[0].data["state"] == "running"
    assert events[0].data["temperature"] == "62.1"
    assert feed(service, clock, [Sample("M1", MACHINE_STATE, at(0.5), Decimal(0))]) == []
    events = feed(service, clock, [Sample("M1", MACHINE_STATE, at(5), Decimal(1))])
    assert events == []  # newer, but the same value: not a change worth sending

    events = service.record_node_status("GW-1", None, False, at(10))
    assert sorted(e.type for e in events) == ["machine.updated", "node.updated", "node.updated"]
    nodes = {(n.edge_node, n.device): n.online for n in service.nodes()}
    assert nodes == {("GW-1", None): False, ("GW-1", "M1"): False}
    (m1, *_) = service.machines()
    assert (m1.state, m1.online, m1.updated_at) == ("running", False, at(5))


def test_bad_samples_are_refused(service: PlantService) -> None:
    naive = datetime(2026, 11, 24, 8, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(Invalid, match="no time zone"):
        service.record_samples([Sample("M1", GOOD_COUNT, naive, Decimal(1))])
    with pytest.raises(Invalid, match="unsupported value type"):
        service.record_samples([Sample("M1", GOOD_COUNT, T0, [1])])  # type: ignore[arg-type]
    assert service.record_samples([]) == []


def test_dashboard_shape(service: PlantService, clock: Clock) -> None:
    clock.now = T0
    service.release_work_order("WO-1001")
    service.start_work_order("WO-1001")
    data = service.dashboard().to_json()
    assert data["plant"] == {"code": "PLANT-1", "name": "Demo Plant Suzhou"}
    assert data["generated_at"] == "2026-11-24T08:00:00.000Z"
    assert [m["code"] for m in data["machines"]] == ["M1", "M2", "M3"]
    (wo,) = data["work_orders"]
    assert wo["rate_basis"] == "standard"
    assert wo["rate_per_hour"] == "2160"
    assert wo["projected_completion"] == "2026-11-24T08:27:47.000Z"
    assert {(s["item"], s["location"]) for s in data["stock"]} == set(OPENING)
    (line,) = data["sales_orders"]
    assert line["promised_at"] == "2026-11-24T08:14:00.000Z"
    assert set(line) == {
        "order",
        "customer",
        "line",
        "item",
        "quantity",
        "requested_date",
        "promised_at",
        "promise_reason",
        "at_risk",
    }
