"""Concurrent reservations and moves of the same stock, each writer on its own connection.

Odoo's PR #32857 let 20 concurrent reservations of 10 available units all through; here exactly
10 succeed and the rest are refused, on PostgreSQL (row locks) and SQLite (one writer).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from taktline_cloud.errors import Conflict
from taktline_cloud.inventory.ledger import Move
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
FG, STORE, CUSTOMER = "FG-100", "WH1/FG", "VIRTUAL/CUSTOMER"
OPENING_FG = Decimal(120)  # config/plant.yaml
WRITERS = 20


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    with Database(database_url) as database:
        PlantService(database, clock=lambda: T0).load_master_data(PLANT)
        yield database


def race(
    url: str, attempt: Callable[[Database, threading.Barrier | None], None]
) -> tuple[int, list[Exception]]:
    """Run `attempt` in 20 threads at once, each on its own connection: (successes, errors).

    On PostgreSQL the threads meet inside their open transactions (`attempt` waits on the
    barrier), so all 20 writes truly overlap; SQLite takes its write lock at BEGIN, so there
    they meet just before it.
    """
    databases = [Database(url) for _ in range(WRITERS)]
    start = threading.Barrier(WRITERS, timeout=30)
    inside = databases[0].backend == "postgresql"

    def one(database: Database) -> Exception | None:
        if not inside:
            start.wait()
        try:
            attempt(database, start if inside else None)
        except Conflict as exc:
            return exc
        return None

    try:
        with ThreadPoolExecutor(WRITERS) as pool:
            outcomes = list(pool.map(one, databases, timeout=60))
    finally:
        for database in databases:
            database.close()
    refused = [o for o in outcomes if o is not None]
    return WRITERS - len(refused), refused


def test_20_concurrent_reservations_of_10_available_succeed_exactly_10_times(
    db: Database, database_url: str
) -> None:
    first = PlantService(db, clock=lambda: T0)
    first.reserve(FG, STORE, "SO-1001/1", OPENING_FG - 10)  # 10 left available

    def reserve_one(database: Database, start: threading.Barrier | None) -> None:
        service = PlantService(database, clock=lambda: T0)
        if start is not None:
            start.wait()
        service.reserve(FG, STORE, "SO-1001/1", Decimal(1))

    succeeded, refused = race(database_url, reserve_one)

    assert succeeded == 10
    assert len(refused) == 10
    assert all("cannot reserve 1 of FG-100 at WH1/FG: 0 available" in str(e) for e in refused)
    (balance,) = first.balances(FG, STORE)
    assert (balance.on_hand, balance.reserved, balance.available) == (OPENING_FG, OPENING_FG, 0)
    held = first.reservations("SO-1001/1")
    assert len(held) == 11
    assert sum(r.open for r in held) == OPENING_FG


def test_20_concurrent_moves_of_10_on_hand_succeed_exactly_10_times(
    db: Database, database_url: str
) -> None:
    with db.transaction() as tx:
        tx.append_moves([Move(FG, STORE, CUSTOMER, OPENING_FG - 10, "shipment", "SHIP-1", T0)])

    def ship_one(database: Database, start: threading.Barrier | None) -> None:
        with database.transaction() as tx:
            if start is not None:
                start.wait()
            # What a command reads before it moves stock: the writers overlap meanwhile.
            tx.plant_model()
            tx.append_moves([Move(FG, STORE, CUSTOMER, Decimal(1), "shipment", "SHIP-2", T0)])

    succeeded, refused = race(database_url, ship_one)

    assert succeeded == 10
    assert all("not enough FG-100 at WH1/FG: 0 on hand, 1 requested" in str(e) for e in refused)
    with db.transaction(write=False) as tx:
        assert tx.on_hand(FG, STORE) == 0
        assert tx.on_hand(FG, CUSTOMER) == OPENING_FG
        shipped = [m for m in tx.ledger(FG, limit=None) if m.reference == "SHIP-2"]
    assert len(shipped) == 10  # a refused move leaves no ledger entry behind
