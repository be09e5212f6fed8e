"""Property: whatever sequence of moves and reservations is tried, the balances equal the ledger
sums, reserved equals the open reservations, and no internal location goes negative (both
databases). Each step is predicted by a model in Python: refused exactly when it should be."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taktline_cloud.errors import Conflict
from taktline_cloud.inventory.ledger import Move
from taktline_cloud.service import PlantService
from taktline_cloud.storage import Database

PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
ITEMS = ("RM-GASKET", "RM-HOUSING")
RAW, FG = "WH1/RAW", "WH1/FG"
SUPPLIER, CUSTOMER, PRODUCTION = "VIRTUAL/SUPPLIER", "VIRTUAL/CUSTOMER", "VIRTUAL/PRODUCTION"
INTERNAL = (RAW, FG)
ROUTES = ((SUPPLIER, RAW), (RAW, CUSTOMER), (RAW, FG), (FG, RAW), (FG, CUSTOMER))

Key = tuple[str, str]


@dataclass(frozen=True)
class MoveStep:
    item: str
    route: tuple[str, str]
    quantity: Decimal


@dataclass(frozen=True)
class ReserveStep:
    item: str
    location: str
    quantity: Decimal


@dataclass(frozen=True)
class ReleaseStep:
    pick: int


@dataclass(frozen=True)
class ConsumeStep:
    pick: int
    quantity: Decimal


# Small numbers, so steps often meet the limits (a half: quantities need not be whole).
quantities = st.integers(1, 20).map(lambda halves: Decimal(halves) / 2)
steps = st.lists(
    st.one_of(
        st.builds(MoveStep, st.sampled_from(ITEMS), st.sampled_from(ROUTES), quantities),
        st.builds(ReserveStep, st.sampled_from(ITEMS), st.sampled_from(INTERNAL), quantities),
        st.builds(ReleaseStep, st.integers(0, 20)),
        st.builds(ConsumeStep, st.integers(0, 20), quantities),
    ),
    max_size=30,
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cloud.db'}"
    else:
        url = str(request.getfixturevalue("postgres_dsn"))
    with Database(url) as database:
        PlantService(database, clock=lambda: T0).load_master_data(PLANT)
        yield database


class Model:
    """What the books should say after each step."""

    def __init__(self) -> None:
        self.on_hand: defaultdict[Key, Decimal] = defaultdict(Decimal)
        self.reserved: defaultdict[Key, Decimal] = defaultdict(Decimal)
        self.open: dict[int, tuple[Key, Decimal]] = {}

    def can_take(self, key: Key, quantity: Decimal) -> bool:
        if key[1] not in INTERNAL:
            return True
        return quantity <= self.on_hand[key] - self.reserved[key]

    def move(self, item: str, source: str, target: str, quantity: Decimal) -> None:
        self.on_hand[(item, source)] -= quantity
        self.on_hand[(item, target)] += quantity


def run(db: Database, model: Model, step: object) -> None:
    """Apply one step to the database and to the model; refused exactly when predicted."""
    if isinstance(step, MoveStep):
        source, target = step.route
        expected = model.can_take((step.item, source), step.quantity)
        try:
            with db.transaction() as tx:
                tx.append_moves([Move(step.item, source, target, step.quantity, "t", "T", T0)])
        except Conflict:
            assert not expected, f"{step} refused"
        else:
            assert expected, f"{step} booked"
            model.move(step.item, source, target, step.quantity)
    elif isinstance(step, ReserveStep):
        key = (step.item, step.location)
        expected = step.quantity <= model.on_hand[key] - model.reserved[key]
        try:
            with db.transaction() as tx:
                made = tx.reserve(step.item, step.location, "WO-1001", step.quantity, T0)
        except Conflict:
            assert not expected, f"{step} refused"
        else:
            assert expected, f"{step} reserved"
            model.reserved[key] += step.quantity
            model.open[made.id] = (key, step.quantity)
    elif isinstance(step, ReleaseStep | ConsumeStep):
        if not model.open:
            return
        number = sorted(model.open)[step.pick % len(model.open)]
        key, held = model.open[number]
        with db.transaction() as tx:
            reservation = tx.reservation(number, lock=True)
            assert reservation is not None
            assert reservation.open == held
            if isinstance(step, ReleaseStep):
                tx.release_reservation(reservation, T0)
                taken = held
            else:
                taken = min(step.quantity, held)
                tx.consume_reservation(reservation, taken, PRODUCTION, T0)
                model.move(key[0], key[1], PRODUCTION, taken)
        model.reserved[key] -= taken
        if taken == held:
            del model.open[number]
        else:
            model.open[number] = (key, held - taken)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=steps)
def test_balances_always_equal_the_ledger_and_the_open_reservations(
    db: Database, steps: list[object]
) -> None:
    with db.transaction() as tx:  # every example starts from empty books
        for table in ("reservations", "stock_moves", "stock_balances"):
            tx.executor.execute(f"DELETE FROM {table}")
    model = Model()
    for step in steps:
        run(db, model, step)

    with db.transaction(write=False) as tx:
        ledger = tx.ledger(limit=None)
        balances = {(b.item, b.location): b for b in tx.balance_rows()}
        open_reservations = tx.reservations()
    sums: defaultdict[Key, Decimal] = defaultdict(Decimal)
    for entry in ledger:
        sums[(entry.item, entry.from_location)] -= entry.quantity
        sums[(entry.item, entry.to_location)] += entry.quantity
    held: defaultdict[Key, Decimal] = defaultdict(Decimal)
    for reservation in open_reservations:
        held[(reservation.item, reservation.location)] += reservation.open
    for key in sums.keys() | balances.keys() | held.keys():
        balance = balances.get(key)
        on_hand = balance.on_hand if balance else Decimal(0)
        reserved = balance.reserved if balance else Decimal(0)
        assert on_hand == sums[key] == model.on_hand[key], key
        assert reserved == held[key] == model.reserved[key], key
        if key[1] in INTERNAL:
            assert 0 <= reserved <= on_hand, key
