"""Lots and cycle counts through the plant service on both backends: receipts into lots, the lot
rule of stores, the FIFO backflush, counts posted at once or waiting for another user's approval,
their bad input, two approvals at once, and (a property) lot balances equal the ledger's lot sums.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taktline_cloud.api import ApiContext, install_api
from taktline_cloud.errors import Conflict, Forbidden, Invalid, NotFound
from taktline_cloud.events import STOCK_UPDATED
from taktline_cloud.historian.samples import Sample
from taktline_cloud.inventory.ledger import Move
from taktline_cloud.live import LiveHub, ServiceGateway, ServiceWorker
from taktline_cloud.purchasing.suppliers import Supplier, SupplierItem
from taktline_cloud.purchasing_service import PurchasingService, RequisitionInput
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database
from taktline_contract.metrics import GOOD_COUNT
from tests.support import Clock

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
RAW, FG, INVENTORY = "WH1/RAW", "WH1/FG", "VIRTUAL/INVENTORY"
SUPPLIER, CUSTOMER = "VIRTUAL/SUPPLIER", "VIRTUAL/CUSTOMER"
HOUSING = "RM-HOUSING"  # config/plant.yaml: 6000 at WH1/RAW at 12.50, 1 per FG-100
GASKET = "RM-GASKET"  # 6000 at WH1/RAW at 0.35
# The plant's threshold is 500.00: 40 housings (500.00) post at once, 41 (512.50) wait.


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def service(db: Database, clock: Clock) -> PlantService:
    plant = PlantService(db, clock=clock)
    plant.load_master_data(PLANT)
    return plant


def book(db: Database, *moves: Move) -> None:
    with db.transaction() as tx:
        tx.append_moves(moves)


def move(item: str, source: str, target: str, quantity: int | str, lot: str | None = None) -> Move:
    return Move(item, source, target, Decimal(quantity), "test", "TEST", T0, lot=lot)


def lots(service: PlantService, item: str, location: str) -> list[tuple[str | None, Decimal]]:
    return [(row.lot, row.on_hand) for row in service.lots(item, location)]


def on_hand(service: PlantService, item: str, location: str) -> Decimal:
    (row,) = service.balances(item, location)
    return row.on_hand


def lot_sums_match_the_ledger(db: Database) -> None:
    """Every lot balance equals the sum of the lot's moves in and out of its location."""
    with db.transaction(write=False) as tx:
        sums: defaultdict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
        for entry in tx.ledger(limit=None):
            if entry.lot is not None:
                sums[(entry.item, entry.from_location, entry.lot)] -= entry.quantity
                sums[(entry.item, entry.to_location, entry.lot)] += entry.quantity
        kept = {(b.item, b.location, b.lot): b.on_hand for b in tx.lot_balances()}
    for key in sums.keys() | kept.keys():
        assert kept.get(key, Decimal(0)) == sums[key], key


# --- lots ------------------------------------------------------------------------------------


def test_receipts_go_into_lots_and_a_store_refuses_to_take_more_than_a_lot_holds(
    service: PlantService, db: Database
) -> None:
    row, _ = service.receive(HOUSING, RAW, Decimal(100), Decimal("12.50"), "DN-1", lot="L1")
    assert row.lot == "L1"
    service.receive(HOUSING, RAW, Decimal(50), Decimal("12.50"), "DN-2", lot="L2")
    assert lots(service, HOUSING, RAW) == [(None, 6000), ("L1", 100), ("L2", 50)]

    with pytest.raises(Conflict, match="not enough RM-HOUSING in lot L1 at WH1/RAW: 100 in the"):
        book(db, move(HOUSING, RAW, CUSTOMER, 120, lot="L1"))
    with pytest.raises(Conflict, match="not enough RM-HOUSING in lot L9 at WH1/RAW: 0 in the"):
        book(db, move(HOUSING, RAW, CUSTOMER, 1, lot="L9"))
    book(db, move(HOUSING, RAW, FG, 30, lot="L1"))  # a lot keeps its code across stores
    assert lots(service, HOUSING, RAW) == [(None, 6000), ("L1", 70), ("L2", 50)]
    assert lots(service, HOUSING, FG) == [("L1", 30)]
    assert on_hand(service, HOUSING, RAW) == 6120
    # The same code is another lot of another item.
    service.receive(GASKET, RAW, Decimal(10), Decimal("0.35"), "DN-3", lot="L1")
    assert lots(service, GASKET, RAW) == [(None, 6000), ("L1", 10)]
    lot_sums_match_the_ledger(db)

    with pytest.raises(NotFound, match="no item 'NOPE'"):
        service.lots("NOPE")
    with pytest.raises(NotFound, match="no location 'NOWHERE'"):
        service.lots(HOUSING, "NOWHERE")
    with pytest.raises(Invalid, match="lot 'a b': 1-64 characters without spaces"):
        service.receive(HOUSING, RAW, Decimal(1), Decimal(1), "DN-4", lot="a b")


def good(seconds: int, value: int) -> Sample:
    return Sample("M3", GOOD_COUNT, T0 + timedelta(seconds=seconds), Decimal(value))


def test_the_backflush_takes_stock_without_a_lot_first_then_the_lots_oldest_first(
    service: PlantService, db: Database, clock: Clock
) -> None:
    book(db, move(HOUSING, RAW, CUSTOMER, 5995))  # 5 housings left without a lot
    service.receive(HOUSING, RAW, Decimal(3), Decimal("12.50"), "DN-1", lot="OLD")
    service.receive(HOUSING, RAW, Decimal(10), Decimal("12.50"), "DN-2", lot="NEW")
    service.release_work_order("WO-1001")
    service.start_work_order("WO-1001")
    clock.now = T0 + timedelta(seconds=60)
    events = service.record_samples([good(1, 0), good(60, 10)])

    (posting,) = [e for e in events if e.type == "posting"]
    taken = [
        (m["lot"], m["quantity"])
        for m in posting.data["moves"]
        if m["item"] == HOUSING and m["from_location"] == RAW
    ]
    assert taken == [(None, "5"), ("OLD", "3"), ("NEW", "2")]
    assert lots(service, HOUSING, RAW) == [("NEW", 8)]
    # A count is never refused: beyond every lot the rest goes below zero without a lot.
    clock.now = T0 + timedelta(seconds=120)
    service.record_samples([good(120, 25)])
    assert on_hand(service, HOUSING, RAW) == -7
    assert lots(service, HOUSING, RAW) == [(None, -7)]
    lot_sums_match_the_ledger(db)


def test_a_reservations_consumption_takes_the_lots_fifo_too(
    service: PlantService, db: Database
) -> None:
    book(db, move(HOUSING, RAW, CUSTOMER, 5990))  # 10 housings left without a lot
    service.receive(HOUSING, RAW, Decimal(20), Decimal("12.50"), "DN-1", lot="L1")
    reservation, _ = service.reserve(HOUSING, RAW, "WO-1001", Decimal(25))
    consumed, _ = service.consume_reservation(reservation.id)
    assert consumed.consumed == 25
    assert lots(service, HOUSING, RAW) == [("L1", 5)]
    taken = [(e.lot, e.quantity) for e in service.ledger(HOUSING) if e.reason == "consumption"]
    assert set(taken) == {(None, 10), ("L1", 15)}
    lot_sums_match_the_ledger(db)


def test_a_purchase_order_receipt_goes_into_the_receivers_lot_or_a_generated_one(
    service: PlantService, db: Database, clock: Clock
) -> None:
    purchasing = PurchasingService(db, clock=clock)
    purchasing.upsert_supplier(Supplier("ACME", "Acme", 3, "EUR", Decimal("0.1")))
    purchasing.upsert_supplier_item(SupplierItem("ACME", GASKET, Decimal("0.30")))
    wanted = RequisitionInput(GASKET, Decimal(1000), date(2026, 12, 10))
    (order,) = purchasing.draft([wanted])
    purchasing.send(order.number)
    purchasing.confirm(order.number, {})

    first = purchasing.receive(order.number, 1, Decimal(300))
    second = purchasing.receive(order.number, 1, Decimal(200), "SUPPLIER-LOT-9")
    third = purchasing.receive(order.number, 1, Decimal(100))
    assert [r.receipt.lot for r in (first, second, third)] == [
        f"{order.number}-1-1",
        "SUPPLIER-LOT-9",
        f"{order.number}-1-3",
    ]
    assert first.move.lot == f"{order.number}-1-1"
    assert lots(service, GASKET, RAW) == [
        (None, 6000),
        (f"{order.number}-1-1", 300),
        ("SUPPLIER-LOT-9", 200),
        (f"{order.number}-1-3", 100),
    ]
    lot_sums_match_the_ledger(db)


# --- counts ----------------------------------------------------------------------------------


def test_a_count_within_the_threshold_posts_its_difference_at_once(
    service: PlantService,
) -> None:
    count, events = service.count_stock(HOUSING, RAW, Decimal(5960), "anna")
    assert (count.status, count.book, count.difference, count.value) == (
        "posted",
        6000,
        -40,
        Decimal("500.00"),
    )
    assert count.decided_by is None
    assert on_hand(service, HOUSING, RAW) == 5960
    (entry,) = [e for e in service.ledger(HOUSING) if e.reason == "count"]
    assert (entry.from_location, entry.to_location, entry.quantity) == (RAW, INVENTORY, 40)
    assert (entry.reference, entry.unit_cost, entry.value) == ("COUNT-1", 12.5, 500)
    stock = [e.data for e in events if e.type == STOCK_UPDATED]
    assert {"item": HOUSING, "location": RAW, "on_hand": "5960"}.items() <= stock[0].items()

    found, _ = service.count_stock(GASKET, RAW, Decimal(6010), "anna")  # 3.50: found more
    assert found.status == "posted"
    assert on_hand(service, GASKET, RAW) == 6010
    unchanged, events = service.count_stock(GASKET, RAW, Decimal(6010), "anna")
    assert (unchanged.status, unchanged.difference, events) == ("posted", 0, [])


def test_a_count_above_the_threshold_waits_for_another_users_approval(
    service: PlantService, db: Database
) -> None:
    count, events = service.count_stock(HOUSING, RAW, Decimal(5900), "anna")
    assert (count.status, count.difference, count.value) == ("pending", -100, 1250)
    assert events == []
    assert on_hand(service, HOUSING, RAW) == 6000
    assert [c.id for c in service.counts("pending")] == [count.id]

    with pytest.raises(Forbidden, match="anna counted count 1 of RM-HOUSING at WH1/RAW and may"):
        service.approve_count(count.id, "anna")
    # Shipped after the count: the shelf and the books both lost these 100.
    book(db, move(HOUSING, RAW, CUSTOMER, 100))

    approved, events = service.approve_count(count.id, "bob")
    assert (approved.status, approved.decided_by) == ("approved", "bob")
    # The difference as at the count is posted, not 5900 - the book at approval (0).
    assert on_hand(service, HOUSING, RAW) == 5800
    assert any(e.type == STOCK_UPDATED and e.data["on_hand"] == "5800" for e in events)
    with pytest.raises(Conflict, match="count 1 of RM-HOUSING at WH1/RAW is already approved"):
        service.approve_count(count.id, "carl")
    with pytest.raises(Conflict, match="is already approved by bob"):
        service.reject_count(count.id, "carl")
    assert service.counts("pending") == []
    assert [c.id for c in service.counts("approved")] == [count.id]


def test_a_posted_count_replans_its_item_by_net_change(service: PlantService) -> None:
    first, _ = service.run_mrp()
    service.count_stock(HOUSING, RAW, Decimal(5990), "anna")  # posted at once
    latest = service.mrp_latest_run()
    assert (latest.kind, latest.id) == ("net-change", first.id + 1)
    count, _ = service.count_stock(HOUSING, RAW, Decimal(5000), "anna")  # pending: no run
    assert service.mrp_latest_run().id == first.id + 1
    service.approve_count(count.id, "bob")
    assert service.mrp_latest_run().id == first.id + 2


def test_a_pending_count_can_be_rejected_and_posts_nothing(service: PlantService) -> None:
    count, _ = service.count_stock(HOUSING, RAW, Decimal(6100), "anna")
    assert count.status == "pending"
    rejected, events = service.reject_count(count.id, "anna")  # the counter may withdraw it
    assert (rejected.status, rejected.decided_by, events) == ("rejected", "anna", [])
    assert on_hand(service, HOUSING, RAW) == 6000
    with pytest.raises(Conflict, match="already rejected"):
        service.approve_count(count.id, "bob")


def test_a_count_of_a_lot_adjusts_that_lot(service: PlantService, db: Database) -> None:
    service.receive(HOUSING, RAW, Decimal(100), Decimal("12.50"), "DN-1", lot="L1")
    count, _ = service.count_stock(HOUSING, RAW, Decimal(90), "anna", lot="L1")
    assert (count.status, count.book, count.difference) == ("posted", 100, -10)
    assert lots(service, HOUSING, RAW) == [(None, 6000), ("L1", 90)]
    # A count of the whole store that finds less takes stock without a lot first.
    count, _ = service.count_stock(HOUSING, RAW, Decimal(6085), "anna")
    assert count.difference == -5
    assert lots(service, HOUSING, RAW) == [(None, 5995), ("L1", 90)]
    lot_sums_match_the_ledger(db)


def test_a_pending_count_that_would_take_the_books_below_zero_is_refused(
    service: PlantService, db: Database
) -> None:
    service.receive(HOUSING, RAW, Decimal(100), Decimal("12.50"), "DN-1", lot="L1")
    count, _ = service.count_stock(HOUSING, RAW, Decimal(50), "anna", lot="L1")
    assert count.status == "pending"  # 50 x 12.50 = 625
    book(db, move(HOUSING, RAW, CUSTOMER, 80, lot="L1"))  # the books say 20 are left in L1
    with pytest.raises(Conflict, match="takes 50 but the books hold 20 of RM-HOUSING in lot L1"):
        service.approve_count(count.id, "bob")
    assert service.counts("pending")[0].id == count.id  # still pending: reject, count again


def test_bad_counts_are_refused_with_the_reason(service: PlantService) -> None:
    cases: list[tuple[dict[str, object], type[Exception], str]] = [
        ({"item": "NOPE"}, Invalid, "unknown item 'NOPE'"),
        ({"location": "NOWHERE"}, Invalid, "unknown location 'NOWHERE'"),
        ({"location": CUSTOMER}, Invalid, "VIRTUAL/CUSTOMER is a customer location"),
        ({"lot": "NO-LOT"}, Invalid, "unknown lot 'NO-LOT' of RM-HOUSING"),
        ({"counted": Decimal(-1)}, Invalid, "counted quantity must be >= 0, got -1"),
        ({"user": None}, Invalid, "X-Taktline-User header"),
        ({"user": " "}, Invalid, "X-Taktline-User header"),
    ]
    for change, error, message in cases:
        args: dict[str, object] = {
            "item": HOUSING,
            "location": RAW,
            "counted": Decimal(1),
            "user": "anna",
            "lot": None,
        }
        args.update(change)
        with pytest.raises(error, match=message):
            service.count_stock(**args)  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="no count 99"):
        service.approve_count(99, "bob")
    with pytest.raises(Invalid, match="count status 'bogus': one of pending, posted"):
        service.counts("bogus")
    with pytest.raises(NotFound, match="no item 'NOPE'"):
        service.counts(item="NOPE")
    assert service.counts() == []


def test_two_approvals_of_one_count_at_once_post_it_once(
    service: PlantService, database_url: str
) -> None:
    count, _ = service.count_stock(HOUSING, RAW, Decimal(5000), "anna")
    assert count.status == "pending"
    databases = [Database(database_url) for _ in range(2)]
    start = threading.Barrier(2, timeout=30)

    def approve(args: tuple[Database, str]) -> Exception | None:
        database, user = args
        other = PlantService(database, clock=lambda: T0)
        start.wait()
        try:
            other.approve_count(count.id, user)
        except Conflict as exc:
            return exc
        return None

    try:
        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(approve, zip(databases, ("bob", "carl"), strict=True)))
    finally:
        for database in databases:
            database.close()
    refused = [o for o in outcomes if o is not None]
    assert len(refused) == 1, outcomes
    assert "is already approved" in str(refused[0])
    assert on_hand(service, HOUSING, RAW) == 5000
    assert len([e for e in service.ledger(HOUSING) if e.reason == "count"]) == 1


# --- the REST API ------------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with Database(f"sqlite:///{tmp_path / 'cloud.db'}") as db:
        plant = PlantService(db, clock=lambda: T0)
        plant.load_master_data(PLANT)
        app = FastAPI()
        install_api(app)
        hub = LiveHub(max_queue=16)
        app.state.taktline = ApiContext(ServiceGateway(plant, ServiceWorker(), hub), hub)
        with TestClient(app) as test_client:
            yield test_client


def test_counts_and_lots_through_the_api(client: TestClient) -> None:
    body = {"item": HOUSING, "location": RAW, "counted": "5900"}
    missing = client.post("/api/stock/counts", json=body)
    assert missing.status_code == 422
    assert "X-Taktline-User header" in missing.json()["detail"]
    created = client.post("/api/stock/counts", json=body, headers={"X-Taktline-User": "anna"})
    assert created.status_code == 201, created.text
    count = created.json()
    assert {k: count[k] for k in ("status", "difference", "value", "counted_by")} == {
        "status": "pending",
        "difference": "-100",
        "value": "1250",
        "counted_by": "anna",
    }
    pending = client.get("/api/stock/counts", params={"status": "pending"}).json()
    assert [c["id"] for c in pending] == [count["id"]]

    path = f"/api/stock/counts/{count['id']}"
    own = client.post(f"{path}/approve", headers={"X-Taktline-User": "anna"})
    assert own.status_code == 403
    assert "anna counted count 1" in own.json()["detail"]
    assert client.post(f"{path}/approve").status_code == 422
    approved = client.post(f"{path}/approve", headers={"X-Taktline-User": "bob"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    again = client.post(f"{path}/approve", headers={"X-Taktline-User": "carl"})
    assert again.status_code == 409
    assert "already approved by bob" in again.json()["detail"]
    assert (
        client.post("/api/stock/counts/99/reject", headers={"X-Taktline-User": "bob"}).status_code
        == 404
    )

    rows = client.get("/api/stock/lots", params={"item": HOUSING}).json()
    assert [(r["location"], r["lot"], r["on_hand"]) for r in rows] == [(RAW, None, "5900")]
    receipt = {
        "item": HOUSING,
        "location": RAW,
        "quantity": "10",
        "unit_cost": "12.50",
        "reference": "DN-1",
        "lot": "L1",
    }
    assert client.post("/api/stock/receipts", json=receipt).json()["lot"] == "L1"
    rows = client.get("/api/stock/lots", params={"item": HOUSING, "location": RAW}).json()
    assert [(r["lot"], r["on_hand"]) for r in rows] == [(None, "5900"), ("L1", "10")]

    for params, code, message in (
        ({"item": "NOPE"}, 404, "no item 'NOPE'"),
        ({"location": "NOWHERE"}, 404, "no location 'NOWHERE'"),
    ):
        answer = client.get("/api/stock/lots", params=params)
        assert answer.status_code == code
        assert message in answer.json()["detail"]
    for change, message in (
        ({"counted": "-1"}, "greater than or equal to 0"),
        ({"lot": "NO-LOT"}, "unknown lot 'NO-LOT' of RM-HOUSING"),
        ({"item": "NOPE"}, "unknown item 'NOPE'"),
    ):
        answer = client.post(
            "/api/stock/counts", json={**body, **change}, headers={"X-Taktline-User": "anna"}
        )
        assert answer.status_code == 422
        assert message in str(answer.json()["detail"])
    assert client.get("/api/stock/counts", params={"status": "bogus"}).status_code == 422


# --- property: lot balances equal the ledger's lot sums ---------------------------------------

LOTS = ("A", "B", "C")


@dataclass(frozen=True)
class Receive:
    lot: str | None
    quantity: Decimal


@dataclass(frozen=True)
class MoveLot:
    lot: str
    target: str
    quantity: Decimal


@dataclass(frozen=True)
class Backflush:
    quantity: Decimal


quantities = st.integers(1, 20).map(lambda halves: Decimal(halves) / 2)
lot_steps = st.lists(
    st.one_of(
        st.builds(Receive, st.one_of(st.none(), st.sampled_from(LOTS)), quantities),
        st.builds(MoveLot, st.sampled_from(LOTS), st.sampled_from((FG, CUSTOMER)), quantities),
        st.builds(Backflush, quantities),
    ),
    max_size=20,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=lot_steps)
def test_lot_balances_always_equal_the_ledgers_lot_moves(
    service: PlantService, db: Database, steps: list[object]
) -> None:
    with db.transaction() as tx:  # every example starts from empty books
        for table in ("reservations", "stock_lot_balances", "stock_moves", "stock_balances"):
            tx.executor.execute(f"DELETE FROM {table}")
    # The model: HOUSING at RAW, without a lot and per lot.
    unlotted = Decimal(0)
    held: defaultdict[str, Decimal] = defaultdict(Decimal)
    for step in steps:
        if isinstance(step, Receive):
            book(db, move(HOUSING, SUPPLIER, RAW, str(step.quantity), lot=step.lot))
            if step.lot is None:
                unlotted += step.quantity
            else:
                held[step.lot] += step.quantity
        elif isinstance(step, MoveLot):
            moved = move(HOUSING, RAW, step.target, str(step.quantity), lot=step.lot)
            # The store's rule and the lot's: neither may go below zero.
            store = unlotted + sum(held.values(), Decimal(0))
            fits = step.quantity <= min(held[step.lot], store)
            try:
                book(db, moved)
            except Conflict:
                assert not fits, f"{step} refused"
            else:
                assert fits, f"{step} booked"
                held[step.lot] -= step.quantity
        else:
            with db.transaction() as tx:
                backflush = move(HOUSING, RAW, "VIRTUAL/PRODUCTION", str(step.quantity))
                tx.append_moves(tx.split_by_lots([backflush]), book_shortage=True)
                oldest_first = [
                    r[0]
                    for r in tx.executor.query(
                        "SELECT code FROM lots WHERE item = ? ORDER BY id", (HOUSING,)
                    )
                ]
            left = step.quantity
            take = min(left, max(unlotted, Decimal(0)))
            unlotted, left = unlotted - take, left - take
            for lot in oldest_first:
                take = min(left, held[lot])
                held[lot], left = held[lot] - take, left - take
            unlotted -= left  # beyond every lot: below zero, without a lot
    lot_sums_match_the_ledger(db)
    with db.transaction(write=False) as tx:
        stored = {b.lot: b.on_hand for b in tx.lot_balances(HOUSING, RAW)}
        store = tx.balance(HOUSING, RAW).on_hand
    assert {k: v for k, v in stored.items() if v} == {k: v for k, v in held.items() if v}
    assert all(v >= 0 for v in stored.values())
    assert store == unlotted + sum(held.values(), Decimal(0))
