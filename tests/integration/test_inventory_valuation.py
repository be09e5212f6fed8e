"""Moving-average valuation on both backends: receipts at a cost move the average, every other
move carries it, production receipts come in at their components' cost, and concurrent
receipts of one item all count."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from taktline_cloud.errors import Invalid
from taktline_cloud.historian.samples import Sample
from taktline_cloud.inventory.ledger import Move
from taktline_cloud.inventory.valuation import average_after_receipt
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database
from taktline_contract.metrics import GOOD_COUNT
from tests.support import Clock

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
RAW, FG, HOUSING = "WH1/RAW", "WH1/FG", "RM-HOUSING"


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def service(db: Database, clock: Clock) -> PlantService:
    plant = PlantService(db, clock=clock)
    plant.load_master_data(PLANT)
    return plant


def cost(service: PlantService, item: str, location: str) -> tuple[Decimal, Decimal]:
    (row,) = service.balances(item, location)
    return row.unit_cost, row.value


def test_the_average_moves_by_quantity_and_becomes_the_cost_when_stores_are_empty() -> None:
    assert average_after_receipt(
        Decimal(6000), Decimal("12.5"), Decimal(2000), Decimal("14.5")
    ) == Decimal(13)
    assert average_after_receipt(Decimal(1), Decimal(1), Decimal(2), Decimal(2)) == Decimal(
        "1.666667"
    )
    assert average_after_receipt(Decimal(-3), Decimal(9), Decimal(5), Decimal(2)) == 2
    assert average_after_receipt(Decimal(0), Decimal(9), Decimal(5), Decimal(0)) == 0
    with pytest.raises(Invalid, match="unit cost must be >= 0"):
        average_after_receipt(Decimal(0), Decimal(0), Decimal(1), Decimal(-1))


def test_opening_stock_and_receipts_carry_their_value_and_move_the_average(
    service: PlantService, db: Database
) -> None:
    opening = next(m for m in service.ledger(HOUSING) if m.reason == "opening")
    assert (opening.unit_cost, opening.value) == (Decimal("12.50"), Decimal(75000))
    assert cost(service, HOUSING, RAW) == (Decimal("12.5"), Decimal(75000))

    row, events = service.receive(HOUSING, RAW, Decimal(2000), Decimal("14.50"), "PO-7")
    assert (row.from_location, row.reason, row.reference) == ("VIRTUAL/SUPPLIER", "receipt", "PO-7")
    assert (row.unit_cost, row.value) == (Decimal("14.50"), Decimal(29000))
    assert [e.data["on_hand"] for e in events if e.type == "stock.updated"] == ["8000"]
    assert cost(service, HOUSING, RAW) == (Decimal(13), Decimal(104000))

    # Issues and transfers carry the average and leave it where it is.
    with db.transaction() as tx:
        (issue,) = tx.append_moves(
            [Move(HOUSING, RAW, "VIRTUAL/CUSTOMER", Decimal(3), "t", "T", T0)]
        )
        (transfer,) = tx.append_moves([Move(HOUSING, RAW, FG, Decimal(2), "t", "T", T0)])
    assert (issue.unit_cost, issue.value) == (Decimal(13), Decimal(39))
    assert transfer.value == Decimal(26)
    assert cost(service, HOUSING, RAW) == (Decimal(13), Decimal(13 * 7995))
    assert service.ledger(HOUSING, limit=1)[0].value == Decimal(26)  # as stored

    with pytest.raises(Invalid, match="unit cost must be >= 0"):
        service.receive(HOUSING, RAW, Decimal(1), Decimal(-1), "PO-8")
    with pytest.raises(Invalid, match="'VIRTUAL/SUPPLIER' is not a store"):
        service.receive(HOUSING, "VIRTUAL/SUPPLIER", Decimal(1), Decimal(1), "PO-8")
    refused = "a unit cost is given only for a receipt into a store"
    with pytest.raises(Invalid, match=refused), db.transaction() as tx:
        tx.append_moves([Move(HOUSING, RAW, FG, Decimal(1), "t", "T", T0, Decimal(1))])


def test_production_receipts_come_in_at_their_components_cost(
    service: PlantService, clock: Clock
) -> None:
    service.receive(HOUSING, RAW, Decimal(2000), Decimal("14.50"), "PO-7")  # housing now 13
    service.release_work_order("WO-1001")
    service.start_work_order("WO-1001")
    clock.now = T0 + timedelta(seconds=60)
    counts = [
        Sample("M3", GOOD_COUNT, T0 + timedelta(seconds=s), Decimal(v))
        for s, v in ((1, 0), (60, 10))
    ]
    service.record_samples(counts)

    moves = {(m.item, m.reason): m for m in service.ledger(limit=20) if m.reference == "WO-1001"}
    assert moves[(HOUSING, "backflush")].value == Decimal(130)
    assert moves[("RM-SEALANT", "backflush")].value == Decimal("0.50")  # 25 ml at 0.02
    made = Decimal(13) + 4 * Decimal("0.04") + Decimal("0.35") + Decimal("2.5") * Decimal("0.02")
    receipt = moves[("FG-100", "receipt")]
    assert (receipt.unit_cost, receipt.value) == (made, 10 * made)
    expected = (120 * Decimal("13.06") + 10 * made) / 130
    unit_cost, _ = cost(service, "FG-100", FG)
    assert unit_cost == expected.quantize(Decimal("0.000001"))


def test_concurrent_receipts_of_one_item_all_count_in_the_average(
    service: PlantService, database_url: str
) -> None:
    writers = 10
    databases = [Database(database_url) for _ in range(writers)]
    start = threading.Barrier(writers, timeout=30)

    def receive(index: int) -> None:
        plant = PlantService(databases[index], clock=lambda: T0)
        start.wait()
        plant.receive(HOUSING, RAW, Decimal(600), Decimal(10 + index), f"PO-{index}")

    try:
        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(receive, range(writers), timeout=60))
    finally:
        for database in databases:
            database.close()

    # A weighted average is the same in any order (up to the rounding of each step).
    exact = (6000 * Decimal("12.5") + sum(600 * Decimal(10 + i) for i in range(writers))) / 12000
    unit_cost, value = cost(service, HOUSING, RAW)
    assert abs(unit_cost - exact) < Decimal("0.00001"), (unit_cost, exact)
    assert value == 12000 * unit_cost
