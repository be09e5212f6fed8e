"""Inventory through the plant service on both backends: balances with reserved and available,
the negative-stock rule of locations, reservations, backflush over reservations and shortages,
and the migration that rebuilds balances from the ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from taktline_cloud.errors import Conflict, Invalid, NotFound
from taktline_cloud.historian.samples import Sample
from taktline_cloud.inventory.ledger import Move
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database
from taktline_contract.metrics import GOOD_COUNT
from tests.support import Clock

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
RAW, FG, PRODUCTION = "WH1/RAW", "WH1/FG", "VIRTUAL/PRODUCTION"
SUPPLIER, CUSTOMER = "VIRTUAL/SUPPLIER", "VIRTUAL/CUSTOMER"
HOUSING = "RM-HOUSING"  # 6000 on hand at WH1/RAW, 1 per FG-100


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


def move(item: str, source: str, target: str, quantity: int | str) -> Move:
    return Move(item, source, target, Decimal(quantity), "test", "TEST", T0)


def balance(service: PlantService, item: str, location: str) -> tuple[Decimal, ...]:
    (row,) = service.balances(item, location)
    return row.on_hand, row.reserved, row.available


def ledger_size(service: PlantService) -> int:
    return len(service.ledger(limit=10_000))


def test_balances_show_on_hand_reserved_and_available_at_internal_locations(
    service: PlantService,
) -> None:
    rows = service.balances()
    assert {(r.item, r.location) for r in rows} == {
        ("FG-100", FG),
        ("RM-GASKET", RAW),
        ("RM-HOUSING", RAW),
        ("RM-SCREW-M6", RAW),
        ("RM-SEALANT", RAW),
    }
    sealant = next(r for r in rows if r.item == "RM-SEALANT")
    assert sealant.to_json() == {
        "item": "RM-SEALANT",
        "name": "Sealant",
        "location": RAW,
        "on_hand": "15000",
        "reserved": "0",
        "available": "15000",
        "uom": "ml",
        "unit_cost": "0.02",
        "value": "300",
    }
    # Asked for by name, a virtual location shows too (the opening stock came from there).
    assert balance(service, HOUSING, "VIRTUAL/INVENTORY") == (-6000, 0, -6000)
    with pytest.raises(NotFound, match="no item 'NOPE'"):
        service.balances("NOPE")
    with pytest.raises(NotFound, match="no location 'WH9'"):
        service.balances(location="WH9")


def test_an_internal_location_refuses_negative_stock_and_names_the_shortage(
    service: PlantService, db: Database
) -> None:
    before = ledger_size(service)
    with pytest.raises(
        Conflict, match=r"not enough RM-HOUSING at WH1/RAW: 6,000 on hand, 6,000\.5 requested"
    ):
        book(db, move(HOUSING, RAW, CUSTOMER, "6000.5"))
    # Two moves in one unit of work: the second one's refusal takes the first one back too.
    with pytest.raises(Conflict, match="not enough RM-GASKET at WH1/RAW"):
        book(db, move(HOUSING, RAW, CUSTOMER, 10), move("RM-GASKET", RAW, CUSTOMER, 6001))
    assert ledger_size(service) == before
    assert balance(service, HOUSING, RAW) == (6000, 0, 6000)

    # Virtual locations stand for the world outside: they may go negative.
    book(db, move(HOUSING, SUPPLIER, RAW, 500), move(HOUSING, RAW, CUSTOMER, 6500))
    assert balance(service, HOUSING, RAW) == (0, 0, 0)
    assert balance(service, HOUSING, SUPPLIER) == (-500, 0, -500)
    assert balance(service, HOUSING, CUSTOMER) == (6500, 0, 6500)


def test_the_plant_file_decides_which_locations_may_go_negative(
    db: Database, clock: Clock, tmp_path: Path
) -> None:
    data = yaml.safe_load(PLANT.read_text(encoding="utf-8"))
    for location in data["locations"]:
        if location["code"] == RAW:
            location["allow_negative"] = True  # a store whose books lag its floor
        if location["code"] == SUPPLIER:
            location["allow_negative"] = False
    plant_file = tmp_path / "plant.yaml"
    plant_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    service = PlantService(db, clock=clock)
    service.load_master_data(plant_file)

    book(db, move(HOUSING, RAW, PRODUCTION, 6001))
    assert balance(service, HOUSING, RAW) == (-1, 0, -1)
    with pytest.raises(Conflict, match="not enough RM-GASKET at VIRTUAL/SUPPLIER: 0 on hand"):
        book(db, move("RM-GASKET", SUPPLIER, RAW, 1))

    # Loading the demo file again puts the defaults back.
    service.load_master_data(PLANT)
    with pytest.raises(Conflict, match="not enough RM-HOUSING at WH1/RAW: -1 on hand"):
        book(db, move(HOUSING, RAW, PRODUCTION, 1))
    book(db, move("RM-GASKET", SUPPLIER, RAW, 1))


def test_reservations_hold_available_stock_until_released_or_consumed(
    service: PlantService, db: Database
) -> None:
    wo, _ = service.reserve(HOUSING, RAW, "WO-1001", Decimal(1000))
    so, _ = service.reserve("FG-100", FG, "SO-1001/1", Decimal(100))
    assert (wo.status, wo.open, wo.quantity) == ("open", 1000, 1000)
    assert balance(service, HOUSING, RAW) == (6000, 1000, 5000)
    assert balance(service, "FG-100", FG) == (120, 100, 20)

    with pytest.raises(
        Conflict,
        match=r"cannot reserve 5,001 of RM-HOUSING at WH1/RAW: 5,000 available"
        r" \(6,000 on hand, 1,000 reserved\)",
    ):
        service.reserve(HOUSING, RAW, "WO-1001", Decimal(5001))
    # Reserved stock is not for anyone else: a plain move may take only what is available.
    with pytest.raises(Conflict, match="6,000 on hand of which 1,000 reserved, 5,001 requested"):
        book(db, move(HOUSING, RAW, CUSTOMER, 5001))

    part, _ = service.consume_reservation(wo.id, Decimal(400))
    assert (part.status, part.open, part.consumed) == ("open", 600, 400)
    assert balance(service, HOUSING, RAW) == (5600, 600, 5000)
    consumption = service.ledger(HOUSING, limit=1)[0]
    assert (consumption.from_location, consumption.to_location) == (RAW, PRODUCTION)
    assert (consumption.quantity, consumption.reason, consumption.reference) == (
        400,
        "consumption",
        "WO-1001",
    )
    with pytest.raises(Conflict, match="reservation 1 holds 600 of RM-HOUSING, 601 requested"):
        service.consume_reservation(wo.id, Decimal(601))

    released, _ = service.release_reservation(wo.id)
    assert (released.status, released.open, released.consumed, released.released) == (
        "released",
        0,
        400,
        600,
    )
    assert released.closed_at == T0
    assert balance(service, HOUSING, RAW) == (5600, 0, 5600)
    with pytest.raises(Conflict, match="reservation 1 is already released"):
        service.release_reservation(wo.id)

    # A sales order line's reservation ships to the customer location.
    shipped, events = service.consume_reservation(so.id)
    assert (shipped.status, shipped.consumed) == ("consumed", 100)
    assert balance(service, "FG-100", FG) == (20, 0, 20)
    assert balance(service, "FG-100", CUSTOMER) == (100, 0, 100)
    stock = [e for e in events if e.type == "stock.updated"]
    assert sorted((e.data["location"], e.data["on_hand"]) for e in stock) == [(FG, "20")]
    assert events[0].type == "reservation.consumed"
    with pytest.raises(Conflict, match="reservation 2 is already consumed"):
        service.consume_reservation(so.id)
    with pytest.raises(NotFound, match="no reservation 99"):
        service.release_reservation(99)

    assert [r.id for r in service.reservations()] == []
    assert [r.id for r in service.reservations(open_only=False)] == [1, 2]
    assert [r.id for r in service.reservations("SO-1001/1", open_only=False)] == [2]


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        (("NOPE", RAW, "WO-1001", "1"), "unknown item 'NOPE'"),
        ((HOUSING, "WH9", "WO-1001", "1"), "unknown location 'WH9'"),
        ((HOUSING, SUPPLIER, "WO-1001", "1"), "VIRTUAL/SUPPLIER is a supplier location"),
        ((HOUSING, RAW, "WO-9", "1"), "no work order 'WO-9'"),
        (("FG-100", FG, "WO-1001", "1"), "FG-100 is not a component of work order"),
        ((HOUSING, RAW, "SO-1001/1", "1"), "SO-1001/1 is for FG-100, not RM-HOUSING"),
        (("FG-100", FG, "SO-1001/2", "1"), "no sales order line SO-1001/2"),
        (("FG-100", FG, "SO 1", "1"), "demand 'SO 1': a work order number"),
        ((HOUSING, RAW, "WO-1001", "0"), "reservation quantity must be > 0"),
    ],
)
def test_a_reservation_names_a_demand_that_needs_the_item(
    service: PlantService, asked: tuple[str, str, str, str], message: str
) -> None:
    item, location, demand, quantity = asked
    with pytest.raises(Invalid, match=message):
        service.reserve(item, location, demand, Decimal(quantity))
    assert service.reservations() == []


def test_a_finished_demand_takes_no_reservation(service: PlantService, db: Database) -> None:
    service.release_work_order("WO-1001")
    service.start_work_order("WO-1001")
    service.complete_work_order("WO-1001")
    with pytest.raises(Conflict, match="work order WO-1001 is completed"):
        service.reserve(HOUSING, RAW, "WO-1001", Decimal(1))
    with db.transaction() as tx:
        tx.executor.execute("UPDATE sales_order_lines SET is_open = ?", (False,))
    with pytest.raises(Conflict, match="sales order line SO-1001/1 is closed"):
        service.reserve("FG-100", FG, "SO-1001/1", Decimal(1))


def count(seconds: int, value: int) -> Sample:
    return Sample("M3", GOOD_COUNT, T0 + timedelta(seconds=seconds), Decimal(value))


def test_a_backflush_draws_the_work_orders_reservation(service: PlantService, clock: Clock) -> None:
    reserved, _ = service.reserve(HOUSING, RAW, "WO-1001", Decimal(1000))
    service.release_work_order("WO-1001")
    service.start_work_order("WO-1001")
    clock.now = T0 + timedelta(seconds=60)
    service.record_samples([count(1, 0), count(60, 10)])

    (left,) = service.reservations("WO-1001")
    assert (left.id, left.open, left.consumed) == (reserved.id, 990, 10)
    assert balance(service, HOUSING, RAW) == (5990, 990, 5000)


def test_a_count_beyond_stock_is_booked_and_the_posting_names_the_shortage(
    service: PlantService, db: Database, clock: Clock
) -> None:
    """A plant must not lose a PLC count: the material was used whatever the books say. The
    backflush is booked, the store goes negative, and the posting says so for a count or a
    receipt to put right; plain moves out of the store are refused until then."""
    book(db, move(HOUSING, RAW, CUSTOMER, 5995))  # 5 housings left
    service.release_work_order("WO-1001")
    service.start_work_order("WO-1001")
    clock.now = T0 + timedelta(seconds=60)
    events = service.record_samples([count(1, 0), count(60, 8)])

    (posting,) = [e for e in events if e.type == "posting"]
    assert posting.data["good_delta"] == "8"
    assert posting.data["shortages"] == [{"item": HOUSING, "location": RAW, "on_hand": "-3"}]
    assert service.work_order("WO-1001").good == 8
    assert balance(service, HOUSING, RAW) == (-3, 0, -3)
    with pytest.raises(Conflict, match="not enough RM-HOUSING at WH1/RAW: -3 on hand"):
        book(db, move(HOUSING, RAW, CUSTOMER, 1))
    book(db, move(HOUSING, SUPPLIER, RAW, 10))  # the receipt that puts it right
    assert balance(service, HOUSING, RAW) == (7, 0, 7)


def test_the_migration_rebuilds_balances_from_the_ledger_and_the_reservations(
    database_url: str, service: PlantService, db: Database
) -> None:
    service.reserve(HOUSING, RAW, "WO-1001", Decimal("12.5"))
    book(db, move(HOUSING, RAW, CUSTOMER, 100))
    with db.transaction() as tx:
        # Books as a release before version 6 could leave them: balances that drifted.
        tx.executor.execute("UPDATE stock_balances SET on_hand = ?, reserved = ?", ("1", "0"))
        tx.executor.execute("DELETE FROM schema_version WHERE version >= 6")

    with Database(database_url) as reopened:
        again = PlantService(reopened, clock=lambda: T0)
        assert balance(again, HOUSING, RAW) == (5900, Decimal("12.5"), Decimal("5887.5"))
        assert balance(again, "FG-100", FG) == (120, 0, 120)
        assert balance(again, HOUSING, CUSTOMER) == (100, 0, 100)
        assert balance(again, HOUSING, "VIRTUAL/INVENTORY") == (-6000, 0, -6000)


def test_a_version_5_database_is_upgraded_with_balances_from_its_ledger(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import taktline_cloud.storage.database as database_module
    from taktline_cloud.storage.migrations import MIGRATIONS

    with monkeypatch.context() as patch:
        patch.setattr(database_module, "MIGRATIONS", MIGRATIONS[:5])
        with Database(database_url) as old, old.transaction() as tx:
            x = tx.executor
            assert old.schema_version == 5
            x.execute("INSERT INTO items (sku, name, kind, uom) VALUES ('RM', 'Raw', 'raw', 'pcs')")
            for code, kind in (("STORE", "internal"), ("SUP", "supplier"), ("PROD", "production")):
                x.execute(
                    "INSERT INTO locations (code, name, kind) VALUES (?, ?, ?)", (code, code, kind)
                )
            for source, target, quantity in (("SUP", "STORE", "10.5"), ("STORE", "PROD", "3")):
                x.execute(
                    "INSERT INTO stock_moves (at, item, from_location, to_location, quantity,"
                    " reason, reference) VALUES (?, 'RM', ?, ?, ?, 'r', 'x')",
                    (T0, source, target, Decimal(quantity)),
                )
            # The old code kept on-hand itself; here it drifted from the ledger.
            x.execute(
                "INSERT INTO stock_balances (item, location, on_hand) VALUES ('RM', 'STORE', ?)",
                (Decimal(99),),
            )

    with Database(database_url) as db, db.transaction(write=False) as tx:
        assert db.schema_version >= 6
        assert {(b.location, b.on_hand, b.reserved) for b in tx.balance_rows("RM")} == {
            ("STORE", Decimal("7.5"), 0),
            ("SUP", Decimal("-10.5"), 0),
            ("PROD", Decimal(3), 0),
        }
        assert tx.negative_allowed() == {"STORE": False, "SUP": True, "PROD": True}
        assert {(m.unit_cost, m.value) for m in tx.ledger("RM")} == {(0, 0)}
        with pytest.raises(Conflict, match=r"not enough RM at STORE: 7\.5 on hand, 8 requested"):
            tx.append_moves([move("RM", "STORE", "PROD", 8)])
